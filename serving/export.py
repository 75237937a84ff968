r"""Exports a trained generator as a TF Serving SavedModel.

  python -m serving.export --model_dir=runs/srgan --export_base=exported --model_name=srgan

writes exported/srgan/<next version>/ (serving_default: image bytes -> PNG bytes; upscale_uint8:
uint8 tensors), ready for `tensorflow_model_server --model_base_path=$PWD/exported/srgan`.
"""

import sys

from absl import app, flags

from serving import contract, export_lib
from serving.serving_module import TilingConfig

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
    "tile_overlap", TilingConfig.overlap, "LR pixels of context around every tile."
)
_MAX_INPUT_PIXELS = flags.DEFINE_integer(
    "max_input_pixels",
    TilingConfig.max_input_pixels,
    "Inputs with more LR pixels (H*W) are rejected.",
)


def main(argv):
    del argv
    try:
        tiling = TilingConfig(
            tile_size=_TILE_SIZE.value,
            overlap=_TILE_OVERLAP.value,
            max_input_pixels=_MAX_INPUT_PIXELS.value,
        )
        export_dir, prefix = export_lib.export_from_model_dir(
            _MODEL_DIR.value, _EXPORT_BASE.value, _MODEL_NAME.value, _VERSION.value, tiling
        )
    except (FileNotFoundError, FileExistsError, ValueError) as e:
        sys.exit(f"export failed: {e}")
    print(f"Exported {prefix} to {export_dir}")


if __name__ == "__main__":
    flags.mark_flags_as_required(["model_dir", "export_base"])
    app.run(main)
