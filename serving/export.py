r"""Exports a trained generator as a TF Serving SavedModel.

  srgan-export --model_dir=runs/srgan --export_base=exported --model_name=srgan
  (or python -m serving.export ...)

writes exported/srgan/<next version>/ (serving_default: image bytes -> PNG bytes; upscale_uint8:
uint8 tensors; the scale and generator configuration in contract.METADATA_FILE), ready for
`tensorflow_model_server --model_base_path=$PWD/exported/srgan`.

A run trained with --ema_decay exports its generator's moving average unless
--export_weights=raw. ESRGAN's network interpolation blends a GAN model with its PSNR model:

  srgan-export --model_dir=runs/esrgan --interpolate_checkpoint=runs/esrgan --alpha=0.8 ...

exports 0.8 * (newest gan checkpoint) + 0.2 * (newest pretrain checkpoint).

--precision=bfloat16 (or float16) exports a graph whose generator computes in that dtype, its
weights cast once at export; the signatures still take and return bytes / uint8.
--format=litert writes a LiteRT (TFLite) model of the generator instead (serving.litert), in
float32, float16 or dynamic-range int8 (--precision=dynamic_int8).
"""

import srgan_cli

srgan_cli.quiet_console()  # before TensorFlow is imported
srgan_cli.import_tensorflow()  # without its C++ start-up lines

import posixpath  # noqa: E402
import sys  # noqa: E402

from absl import app, flags, logging  # noqa: E402

from serving import contract, export_lib, tf_serving_config, versions  # noqa: E402
from serving.serving_module import TilingConfig  # noqa: E402

SAVEDMODEL, LITERT = "savedmodel", "litert"
# The precisions each --format can write (serving.litert's converter options for litert).
PRECISIONS = {
    SAVEDMODEL: export_lib.PRECISIONS,
    LITERT: (export_lib.FLOAT32, export_lib.FLOAT16, "dynamic_int8"),
}
# SavedModel-only flags: the LiteRT model takes one fixed tile and does not check input sizes.
_SAVEDMODEL_ONLY_FLAGS = ("tile_overlap", "max_input_pixels")

_MODEL_DIR = flags.DEFINE_string(
    "model_dir",
    None,
    "Trainer model_dir (newest checkpoint: gan, else pretrain) or a "
    "checkpoint prefix such as MODEL_DIR/gan/ckpt-3.",
)
_EXPORT_BASE = flags.DEFINE_string(
    "export_base", None, "Directory holding one folder per served model."
)
_MODEL_NAME = flags.DEFINE_string(
    "model_name", contract.DEFAULT_MODEL_NAME, "Served model name (the folder under --export_base)."
)
_VERSION = flags.DEFINE_integer(
    "version", None, "Version number; default: one more than the newest present."
)
_TILE_SIZE = flags.DEFINE_integer(
    "tile_size", TilingConfig.tile_size, "Tile core side in LR pixels for large inputs."
)
_TILE_OVERLAP = flags.DEFINE_integer(
    "tile_overlap",
    None,
    "LR pixels of context around every tile (default: 16 for srresnet; the receptive-field "
    f"radius + 1 for rrdb / compact, at most {export_lib.MAX_DEFAULT_OVERLAP}).",
)
_EXPORT_WEIGHTS = flags.DEFINE_enum(
    "export_weights",
    None,
    ["ema", "raw"],
    "The generator's moving average (runs with --ema_decay) or its raw weights "
    "(default: ema when the checkpoint has one, else raw).",
)
_INTERPOLATE_CHECKPOINT = flags.DEFINE_string(
    "interpolate_checkpoint",
    None,
    "ESRGAN network interpolation: the PSNR model (a model_dir, whose newest pretrain "
    "checkpoint is used, or a checkpoint prefix); exports alpha * model + (1 - alpha) * it.",
)
_ALPHA = flags.DEFINE_float(
    "alpha", None, "With --interpolate_checkpoint: the GAN model's weight in [0, 1] (ESRGAN: 0.8)."
)
_FORMAT = flags.DEFINE_enum(
    "format",
    SAVEDMODEL,
    [SAVEDMODEL, LITERT],
    "savedmodel: the TF Serving SavedModel; litert: a LiteRT (TFLite) model of the generator "
    "for a fixed input tile (--tile_size), for phones.",
)
_PRECISION = flags.DEFINE_enum(
    "precision",
    export_lib.FLOAT32,
    sorted(set(PRECISIONS[SAVEDMODEL] + PRECISIONS[LITERT])),
    "What the generator computes in. savedmodel: "
    + ", ".join(PRECISIONS[SAVEDMODEL])
    + " (bfloat16: faster on CPUs with AVX512_BF16 / AMX); litert: "
    + ", ".join(PRECISIONS[LITERT])
    + " (dynamic_int8: int8 weights, float activations).",
)
_MAX_INPUT_PIXELS = flags.DEFINE_integer(
    "max_input_pixels",
    TilingConfig.max_input_pixels,
    "Inputs with more LR pixels (H*W) are rejected.",
)


def check_format_flags(export_format, precision, present_flags=()):
    """Raises app.UsageError for a --precision (or flag) the --format cannot write."""
    if precision not in PRECISIONS[export_format]:
        raise app.UsageError(
            f"--format={export_format} does not take --precision={precision}; it writes "
            + ", ".join(PRECISIONS[export_format])
            + "."
        )
    if export_format == LITERT:
        for name in _SAVEDMODEL_ONLY_FLAGS:
            if name in present_flags:
                raise app.UsageError(f"--{name} applies to --format={SAVEDMODEL} only.")


def export_litert():
    """--format=litert: the generator as a LiteRT model (serving.litert, imported only here)."""
    from serving import litert  # noqa: PLC0415 (another format's module, only when asked)

    return litert.export_litert(
        _MODEL_DIR.value,
        _EXPORT_BASE.value,
        _MODEL_NAME.value,
        _VERSION.value,
        precision=_PRECISION.value,
        tile_size=_TILE_SIZE.value,
        weights=_EXPORT_WEIGHTS.value,
        interpolate_checkpoint=_INTERPOLATE_CHECKPOINT.value,
        alpha=_ALPHA.value,
    )


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"Unexpected arguments: {argv[1:]}")
    present = [name for name in _SAVEDMODEL_ONLY_FLAGS if flags.FLAGS[name].present]
    check_format_flags(_FORMAT.value, _PRECISION.value, present)
    if not srgan_cli.verbose():
        logging.set_verbosity(logging.WARNING)  # the saver's INFO lines (fingerprint, sharding)
    if _FORMAT.value == LITERT:
        try:
            written = export_litert()
        except (FileNotFoundError, FileExistsError, ValueError) as e:
            sys.exit(f"export failed: {e}")
        print(f"Exported a {_PRECISION.value} LiteRT model to {written}")
        return
    try:
        tiling = None
        if _TILE_OVERLAP.value is not None:
            tiling = TilingConfig(
                tile_size=_TILE_SIZE.value,
                overlap=_TILE_OVERLAP.value,
                max_input_pixels=_MAX_INPUT_PIXELS.value,
            )
        export_dir, prefix = export_lib.export_from_model_dir(
            _MODEL_DIR.value,
            _EXPORT_BASE.value,
            _MODEL_NAME.value,
            _VERSION.value,
            tiling,
            weights=_EXPORT_WEIGHTS.value,
            interpolate_checkpoint=_INTERPOLATE_CHECKPOINT.value,
            alpha=_ALPHA.value,
            tile_size=_TILE_SIZE.value,
            max_input_pixels=_MAX_INPUT_PIXELS.value,
            precision=_PRECISION.value,
        )
    except (FileNotFoundError, FileExistsError, ValueError) as e:
        sys.exit(f"export failed: {e}")
    metadata = versions.read_metadata(export_dir)
    print(f"Exported {prefix} (x{metadata['scale']}, {metadata['precision']}) to {export_dir}")
    # TF Serving's server files for every model under the export base (rewritten only when
    # their text changes): serving_config/models.config, batching.config, monitoring.config.
    try:
        paths = tf_serving_config.write_server_configs(_EXPORT_BASE.value)
    except (OSError, ValueError) as e:
        sys.exit(f"exported, but writing the TF Serving config files failed: {e}")
    print(f"TF Serving config: {posixpath.dirname(paths['models'])}")


def run():
    """The `srgan-export` console script."""
    flags.mark_flags_as_required(["model_dir", "export_base"])
    app.run(main)


if __name__ == "__main__":
    run()
