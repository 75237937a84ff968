r"""Upscales an image file or a folder in this process with an exported SavedModel (no server).

  srgan-upscale --model=exported/srgan --input=lr.png --output=sr.png
  srgan-upscale --model=exported/srgan/3 --input=lr_dir --output=sr_dir --signature=upscale_uint8
  (or python -m serving.upscale ...)

--model is a model base path (its newest version is used) or one version directory. The same
signatures, tiling and pixel limit run as behind TF Serving; the scale comes from the export.
"""

import srgan_cli

srgan_cli.quiet_console()  # before TensorFlow is imported
tf = srgan_cli.import_tensorflow()  # without its C++ start-up lines

import posixpath  # noqa: E402
import sys  # noqa: E402

import numpy as np  # noqa: E402
from absl import app, flags  # noqa: E402

from serving import contract, upscale_files, versions  # noqa: E402

_MODEL = flags.DEFINE_string(
    "model", None, "EXPORT_BASE/NAME (newest version) or one version directory EXPORT_BASE/NAME/V."
)
_INPUT = flags.DEFINE_string("input", None, "An image file or a folder of images.")
_OUTPUT = flags.DEFINE_string("output", None, "Output PNG file, or folder for a folder input.")
_SIGNATURE = flags.DEFINE_enum(
    "signature",
    contract.BYTES_SIGNATURE,
    contract.SIGNATURES,
    "serving_default decodes the file in the graph; upscale_uint8 sends decoded pixels.",
)


def resolve_export(model):
    """The version directory `model` names: itself if it holds a SavedModel, else its newest."""
    if tf.io.gfile.exists(posixpath.join(model, "saved_model.pb")):
        return model
    present = versions.list_versions(model)
    if not present:
        raise FileNotFoundError(f"{model} is neither a SavedModel nor holds integer versions.")
    return versions.version_dir(model, present[-1])


class SavedModelUpscaler:
    """The serving signatures of one export, with the client's two upscale methods."""

    def __init__(self, export_dir):
        self.export_dir = export_dir
        self.metadata = versions.read_metadata(export_dir)
        self._model = tf.saved_model.load(export_dir)

    def upscale_encoded(self, images):
        """Encoded images (bytes) -> upscaled PNG bytes, through serving_default."""
        signature = self._model.signatures[contract.BYTES_SIGNATURE]
        outputs = signature(**{contract.BYTES_INPUT: tf.constant(list(images), tf.string)})
        return list(outputs[contract.BYTES_OUTPUT].numpy())

    def upscale_array(self, images):
        """uint8 [N, H, W, 3] -> uint8 [N, H*s, W*s, 3], through upscale_uint8."""
        signature = self._model.signatures[contract.TENSOR_SIGNATURE]
        outputs = signature(**{contract.TENSOR_INPUT: tf.constant(np.asarray(images, np.uint8))})
        return outputs[contract.TENSOR_OUTPUT].numpy()


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"Unexpected arguments: {argv[1:]}")
    try:
        jobs = upscale_files.plan(_INPUT.value, _OUTPUT.value)
        upscaler = SavedModelUpscaler(resolve_export(_MODEL.value))
        for input_file, output_file in jobs:
            width, height = upscale_files.upscale_file(
                upscaler, input_file, output_file, _SIGNATURE.value
            )
            print(f"{input_file} -> {output_file} ({width}x{height})")
    except (FileNotFoundError, ValueError, tf.errors.InvalidArgumentError) as e:
        message = e.message if isinstance(e, tf.errors.OpError) else str(e)
        sys.exit(f"error: {message.strip().splitlines()[0]}")


def run():
    """The `srgan-upscale` console script."""
    flags.mark_flags_as_required(["model", "input", "output"])
    app.run(main)


if __name__ == "__main__":
    run()
