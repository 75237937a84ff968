r"""PSNR/SSIM (Y channel, BT.601) of a generator next to bicubic, on a folder of LR/HR pairs.

  python -m trainer.evaluate --pairs_dir=../shared/data/Set5_x4 --checkpoint=/tmp/srgan_model
  python -m trainer.evaluate --pairs_dir=../shared/data/Set5_x4 --saved_model=/tmp/export/1 \
      --output_json=/tmp/set5.json
  python -m trainer.evaluate --pairs_dir=../shared/data/Set5_x4 --bicubic_only --scale=4
  python -m trainer.evaluate --data_dir=/tmp/srgan_data --split=validation --checkpoint=...

Exactly one source of images: --pairs_dir (a folder of LR/HR files) or --data_dir (a data_prep
dataset; --split picks the split, full images). The scale is read, not asked: from the
checkpoint's generator.json, the SavedModel's export metadata or the dataset's manifest;
--scale is needed only for --bicubic_only on --pairs_dir.
"""

import srgan_cli

srgan_cli.quiet_console()  # before TensorFlow is imported
srgan_cli.import_tensorflow()  # without its C++ start-up lines

import json  # noqa: E402
import posixpath  # noqa: E402
import sys  # noqa: E402

import tensorflow as tf  # noqa: E402
from absl import app, flags  # noqa: E402

from trainer import evaluation, input_pipeline  # noqa: E402

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
_CHECKPOINT_WEIGHTS = flags.DEFINE_enum(
    "checkpoint_weights",
    None,
    ["ema", "raw"],
    "With --checkpoint: the generator's moving average (runs with --ema_decay) or its raw "
    "weights (default: ema when the checkpoint has one, else raw).",
)
_SAVED_MODEL = flags.DEFINE_string(
    "saved_model", None, "An exported SavedModel directory (uses its uint8 tensor signature)."
)
_BICUBIC_ONLY = flags.DEFINE_bool("bicubic_only", False, "Measure the bicubic baseline only.")
_OUTPUT_JSON = flags.DEFINE_string("output_json", None, "Also write the results to this file.")
_SCALE = flags.DEFINE_integer(
    "scale",
    None,
    "Scale of --pairs_dir with --bicubic_only (required there). A model's scale comes from "
    "its generator.json or export metadata, a dataset's from its manifest; a --scale that "
    "disagrees with either is an error.",
)
_HR_REGEX = flags.DEFINE_string("hr_regex", None, "Regex with a (?P<key>...) group for HR names.")
_LR_REGEX = flags.DEFINE_string(
    "lr_regex",
    None,
    "Regex with a (?P<key>...) group for LR names; the files it matches are the LR images.",
)


def saved_model_upscaler(export_dir):
    """(upscale_fn, scale) of an exported SavedModel: its uint8 tensor signature and the scale
    its export metadata records (serving.versions.read_metadata)."""
    from serving import contract, versions  # noqa: PLC0415 (only this entry loads exports)

    if not tf.io.gfile.exists(posixpath.join(export_dir, "saved_model.pb")):
        raise FileNotFoundError(
            f"{export_dir} holds no saved_model.pb: not a SavedModel directory."
        )
    scale = int(versions.read_metadata(export_dir)["scale"])
    loaded = tf.saved_model.load(export_dir)
    if contract.TENSOR_SIGNATURE not in loaded.signatures:
        raise ValueError(
            f"SavedModel {export_dir} has no {contract.TENSOR_SIGNATURE!r} signature "
            f"(it has {sorted(loaded.signatures)})."
        )
    signature = loaded.signatures[contract.TENSOR_SIGNATURE]

    def upscale(lr):
        outputs = signature(**{contract.TENSOR_INPUT: tf.constant(lr[None], tf.uint8)})
        return outputs[contract.TENSOR_OUTPUT][0].numpy()

    upscale.loaded = loaded  # keeps the restored variables alive with the function
    return upscale, scale


def _model():
    """(upscale_fn, scale, what it is) of the model the flags name; Nones for bicubic only."""
    chosen = [f for f in (_CHECKPOINT, _SAVED_MODEL) if f.value]
    if _BICUBIC_ONLY.value:
        if chosen:
            raise ValueError("--bicubic_only takes no --checkpoint or --saved_model.")
        return None, None, None
    if len(chosen) != 1:
        raise ValueError("Pass exactly one of --checkpoint or --saved_model (or --bicubic_only).")
    if _SAVED_MODEL.value:
        upscale, scale = saved_model_upscaler(_SAVED_MODEL.value)
        return upscale, scale, _SAVED_MODEL.value
    upscale, config, prefix = evaluation.checkpoint_upscaler(
        _CHECKPOINT.value, _CHECKPOINT_WEIGHTS.value
    )
    return upscale, config.scale, prefix


def _agreed_scale(*named):
    """The one scale that every given (name, scale) agrees on; None if none is given."""
    given = [(name, scale) for name, scale in named if scale is not None]
    if len({scale for _, scale in given}) > 1:
        raise ValueError(
            "Scales disagree: " + ", ".join(f"{name} x{scale}" for name, scale in given) + "."
        )
    return given[0][1] if given else None


def _evaluate(upscale_fn, model_scale):
    """The Report of the image source the flags name."""
    if bool(_PAIRS_DIR.value) == bool(_DATA_DIR.value):
        raise ValueError("Pass exactly one of --pairs_dir or --data_dir.")
    model = ("the model", model_scale)
    if _DATA_DIR.value:
        source = input_pipeline.open_dataset(_DATA_DIR.value)
        _agreed_scale(model, ("--scale", _SCALE.value), ("the dataset", source.scale))
        return evaluation.evaluate_dataset(upscale_fn, source, _SPLIT.value)
    scale = _agreed_scale(model, ("--scale", _SCALE.value))
    if scale is None:
        raise ValueError("--bicubic_only on --pairs_dir needs --scale (the pairs' factor).")
    found = evaluation.list_pairs(_PAIRS_DIR.value, scale, _HR_REGEX.value, _LR_REGEX.value)
    return evaluation.evaluate_pairs(upscale_fn, found.pairs, scale, found.rejected)


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
    if len(argv) > 1:
        raise app.UsageError(f"Unexpected arguments: {argv[1:]}")
    try:
        upscale_fn, model_scale, model_source = _model()
        report = _evaluate(upscale_fn, model_scale)
    # Expected user errors (bad paths, wrong model, no pairs) end in one line, not a traceback.
    except (ValueError, OSError, AssertionError, tf.errors.OpError) as e:
        sys.exit(f"error: {e}")
    if model_source:
        print(f"model: {model_source}")
    print(format_report(report))
    if _OUTPUT_JSON.value:
        _write_json(_OUTPUT_JSON.value, report, model_source)
        print(f"wrote {_OUTPUT_JSON.value}")


def run():
    """The console-script entry (srgan-evaluate)."""
    app.run(main)


if __name__ == "__main__":
    run()
