r"""PSNR/SSIM (Y channel, BT.601) of a generator next to bicubic, on a folder of LR/HR pairs.

  python -m trainer.evaluate --pairs_dir=../shared/data/Set5_x4 --checkpoint=/tmp/srgan_model
  python -m trainer.evaluate --pairs_dir=../shared/data/Set5_x4 --saved_model=/tmp/export/1 \
      --output_json=/tmp/set5.json
  python -m trainer.evaluate --pairs_dir=../shared/data/Set5_x4 --bicubic_only
  python -m trainer.evaluate --data_dir=/tmp/srgan_data --split=validation --checkpoint=...

Exactly one source of images: --pairs_dir (a folder of LR/HR files) or --data_dir (a data_prep
dataset; --split picks the split, full images).
"""

import json
import sys

import tensorflow as tf
from absl import app, flags

from trainer import evaluation

_PAIRS_DIR = flags.DEFINE_string(
    "pairs_dir",
    None,
    "Folder of HR and LR images (e.g. "
    "img_001_SRF_4_HR.png / img_001_SRF_4_LR.png, or DIV2K 0001.png "
    "/ 0001x4.png).",
)
_DATA_DIR = flags.DEFINE_string(
    "data_dir", None, "A data_prep dataset directory (instead of --pairs_dir)."
)
_SPLIT = flags.DEFINE_string("split", "validation", "The --data_dir split to evaluate.")
_CHECKPOINT = flags.DEFINE_string(
    "checkpoint",
    None,
    "A trainer --model_dir (its newest generator: gan, else pretrain) or a checkpoint prefix.",
)
_SAVED_MODEL = flags.DEFINE_string(
    "saved_model", None, "An exported SavedModel directory (uses its uint8 tensor signature)."
)
_BICUBIC_ONLY = flags.DEFINE_bool("bicubic_only", False, "Measure the bicubic baseline only.")
_OUTPUT_JSON = flags.DEFINE_string("output_json", None, "Also write the results to this file.")
_SCALE = flags.DEFINE_integer(
    "scale",
    4,
    "Scale factor of --pairs_dir (a checkpoint's own scale must agree; --data_dir has its own).",
)
_HR_REGEX = flags.DEFINE_string("hr_regex", None, "Regex with a (?P<key>...) group for HR names.")
_LR_REGEX = flags.DEFINE_string(
    "lr_regex",
    None,
    "Regex with a (?P<key>...) group for LR names; the files it matches are the LR images.",
)


def _evaluate(upscale_fn):
    """The Report of the image source the flags name."""
    if bool(_PAIRS_DIR.value) == bool(_DATA_DIR.value):
        raise ValueError("Pass exactly one of --pairs_dir or --data_dir.")
    if _DATA_DIR.value:
        return evaluation.evaluate_dataset(upscale_fn, _DATA_DIR.value, _SPLIT.value)
    found = evaluation.list_pairs(_PAIRS_DIR.value, _SCALE.value, _HR_REGEX.value, _LR_REGEX.value)
    return evaluation.evaluate_pairs(upscale_fn, found.pairs, _SCALE.value, found.rejected)


def _upscaler():
    """(upscale function, what it is) the flags ask for; (None, None): bicubic only."""
    chosen = [f for f in (_CHECKPOINT, _SAVED_MODEL) if f.value]
    if _BICUBIC_ONLY.value:
        if chosen:
            raise ValueError("--bicubic_only takes no --checkpoint or --saved_model.")
        return None, None
    if len(chosen) != 1:
        raise ValueError("Pass exactly one of --checkpoint or --saved_model (or --bicubic_only).")
    if _SAVED_MODEL.value:
        return evaluation.saved_model_upscaler(_SAVED_MODEL.value), _SAVED_MODEL.value
    upscale, scale, prefix = evaluation.checkpoint_upscaler(_CHECKPOINT.value)
    if _PAIRS_DIR.value and scale != _SCALE.value:
        raise ValueError(
            f"The checkpoint's generator upscales x{scale}, but --scale={_SCALE.value}."
        )
    return upscale, prefix


def format_report(report):
    """The per-image table and the means, model next to bicubic."""
    means = report.means()
    has_model = means["model"] is not None
    header = f"{'image':<24} {'bicubic PSNR':>12} {'SSIM':>7}"
    header += f" {'model PSNR':>11} {'SSIM':>7}" if has_model else ""
    lines = [header]
    for r in report.images:
        line = f"{r.key:<24} {r.bicubic_psnr:12.2f} {r.bicubic_ssim:7.4f}"
        line += f" {r.psnr:11.2f} {r.ssim:7.4f}" if has_model else ""
        lines.append(line)
    bicubic = means["bicubic"]
    line = f"{'mean':<24} {bicubic['psnr']:12.2f} {bicubic['ssim']:7.4f}"
    if has_model:
        line += f" {means['model']['psnr']:11.2f} {means['model']['ssim']:7.4f}"
    lines.append(line)
    for path, key, reason in report.skipped:
        lines.append(f"skipped {path} (key {key}): {reason}")
    return "\n".join(lines)


def _write_json(path, report, model_source):
    # PSNR of a perfect reconstruction is inf; json writes it as Infinity (Python reads it back).
    with open(path, "w") as f:
        json.dump({**report.to_dict(), "model_source": model_source}, f, indent=2, allow_nan=True)
        f.write("\n")


def main(argv):
    del argv
    try:
        upscale_fn, model_source = _upscaler()
        report = _evaluate(upscale_fn)
    # Expected user errors (bad paths, wrong model, no pairs) end in one line, not a traceback.
    except (ValueError, OSError, AssertionError, tf.errors.OpError) as e:
        sys.exit(f"error: {e}")
    if model_source:
        print(f"model: {model_source}")
    print(format_report(report))
    if _OUTPUT_JSON.value:
        _write_json(_OUTPUT_JSON.value, report, model_source)
        print(f"wrote {_OUTPUT_JSON.value}")


if __name__ == "__main__":
    app.run(main)
