r"""Upscales an image file or a folder with a LiteRT export (serving.litert), tile by tile.

  python -m serving.upscale_litert --model=exported/srgan-litert --input=lr.png --output=sr.png
  python -m serving.upscale_litert --model=exported/srgan-litert/2/model.tflite \
      --input=lr_dir --output=sr_dir --num_threads=4

--model is a LiteRT model base path (its newest version is used), one version directory, or its
model.tflite; litert.json beside the model gives the scale, tile and overlap. Runs with the
LiteRT interpreter of `ai-edge-litert` when it is installed, and then needs no TensorFlow (numpy
and PIL only, as on a phone or an edge box); without it, with TensorFlow's tf.lite.Interpreter.

Tiling follows the SavedModel's (serving.tiling): cores of tile_size LR pixels, each upscaled
with `overlap` pixels of real context where the image has them, only the upscaled core kept. The
model's input is fixed at tile_size + 2 * overlap, so each core's window is moved inward at the
image border rather than clipped: the window's edge that lies on the image border is then the
network's own zero padding, as in the SavedModel, and its other edges are at least `overlap`
pixels from the core. With overlap >= the receptive-field radius both equal the untiled output.
An image smaller than the window along an axis runs at its own size along it (the interpreter's
input resized; srresnet, compact and rrdb hold no size in the model), again exactly the
SavedModel's border treatment. A model whose litert.json has resizable_input false (bicubic_skip:
a bicubic matrix of the window's size; or an export older than that key) gets zero-padded windows
instead, and pixels within the receptive radius of that far border may then differ from the
SavedModel's. A phone app that wants one fixed shape pads likewise.
"""

import srgan_cli

srgan_cli.quiet_console()  # before TensorFlow (the fallback interpreter) is imported

import json  # noqa: E402
import os  # noqa: E402
import sys  # noqa: E402
import warnings  # noqa: E402

import numpy as np  # noqa: E402
from absl import app, flags  # noqa: E402

from serving import contract, upscale_files  # noqa: E402

# The names serving.litert writes (it needs TensorFlow, so this module does not import it).
MODEL_FILE = "model.tflite"
METADATA_FILE = "litert.json"
METADATA_FORMAT_VERSION = 1


# The interpreter's one INFO line when it applies its default CPU delegate (printed to fd 2).
_DELEGATE_NOTICE = ("Created TensorFlow Lite XNNPACK delegate",)


def allocate_quietly(interpreter):
    """interpreter.allocate_tensors() without the delegate notice (SRGAN_VERBOSE=1 shows it)."""
    if srgan_cli.verbose():
        interpreter.allocate_tensors()
        return
    with srgan_cli.stderr_without(_DELEGATE_NOTICE):
        interpreter.allocate_tensors()


def interpreter_class():
    """ai_edge_litert's Interpreter when installed, else TensorFlow's tf.lite.Interpreter."""
    try:
        from ai_edge_litert.interpreter import Interpreter  # noqa: PLC0415
    except ImportError:
        tf = srgan_cli.import_tensorflow()
        return tf.lite.Interpreter
    return Interpreter


def _version_dirs(model_base_path):
    """Integer version folders, newest last (serving.versions' rule, without TensorFlow)."""
    names = [n for n in os.listdir(model_base_path) if n.isascii() and n.isdigit()]
    return [os.path.join(model_base_path, n) for n in sorted(names, key=int)]


def resolve_model(model):
    """(model.tflite path, its litert.json dict) of a model file, version dir or base path.

    Raises:
      FileNotFoundError: no model there, or no litert.json beside it.
      ValueError: a litert.json this version cannot read.
    """
    if os.path.isfile(model):
        model_file = model
    elif os.path.isfile(os.path.join(model, MODEL_FILE)):
        model_file = os.path.join(model, MODEL_FILE)
    elif os.path.isdir(model) and _version_dirs(model):
        model_file = os.path.join(_version_dirs(model)[-1], MODEL_FILE)
    else:
        raise FileNotFoundError(
            f"{model} is neither a {MODEL_FILE}, a LiteRT export version, nor holds versions."
        )
    path = os.path.join(os.path.dirname(model_file), METADATA_FILE)
    if not os.path.isfile(path):
        raise FileNotFoundError(
            f"{path} not found: the tiler needs the scale, tile size and overlap that "
            f"serving.litert writes beside {os.path.basename(model_file)}."
        )
    with open(path, encoding="utf-8") as f:
        metadata = json.load(f)
    if (
        metadata.get("format_version") != METADATA_FORMAT_VERSION
        or metadata.get("format") != "litert"
    ):
        raise ValueError(f"{path}: unsupported LiteRT export metadata.")
    return model_file, metadata


def window_starts(length, tile_size, overlap):
    """[(window start, core start, core end)] along an axis of `length` LR pixels.

    Cores are serving.tiling's; a window is tile_size + 2 * overlap long and holds its core's
    context (overlap pixels, clipped at the border), moved inward where the border cuts it.
    An axis shorter than a window gives one window at 0 of its own length (or padded by the
    caller when the model cannot be resized).
    """
    window = tile_size + 2 * overlap
    spans = []
    for start in range(0, length, tile_size):
        end = min(start + tile_size, length)
        spans.append((max(0, min(start - overlap, length - window)), start, end))
    return spans


class LiteRTUpscaler:
    """A LiteRT export behind serving.upscale_files' upscale_array (uint8 in, uint8 out)."""

    def __init__(self, model, num_threads=None):
        if num_threads is not None and num_threads < 1:
            raise ValueError(f"--num_threads must be at least 1, got {num_threads}.")
        self.model_file, self.metadata = resolve_model(model)
        self.scale = int(self.metadata["scale"])
        self.tile_size = int(self.metadata["tile_size"])
        self.overlap = int(self.metadata["overlap"])
        self.window = self.tile_size + 2 * self.overlap
        interpreter = interpreter_class()
        with warnings.catch_warnings():  # TensorFlow's deprecation notice of its fallback
            warnings.filterwarnings("ignore", message=r"[\s\S]*tf.lite.Interpreter is deprecated")
            self._interpreter = interpreter(model_path=self.model_file, num_threads=num_threads)
        allocate_quietly(self._interpreter)
        self._input = self._interpreter.get_input_details()[0]
        self._output = self._interpreter.get_output_details()[0]
        self._check_tensors()
        self._input_hw = (self.window, self.window)
        # Exports without the key (older ones) are padded: always valid, maybe not exact.
        self.resizable = bool(self.metadata.get("resizable_input", False))

    def _check_tensors(self):
        """The model's tensors are what litert.json says (a stale or foreign json fails here)."""
        side = self.window * self.scale
        found = (
            list(self._input["shape"]),
            np.dtype(self._input["dtype"]),
            list(self._output["shape"]),
            np.dtype(self._output["dtype"]),
        )
        expected = ([1, self.window, self.window, 3], np.float32, [1, side, side, 3], np.uint8)
        if found != expected:
            raise ValueError(
                f"{self.model_file}: tensors {found} do not match its {METADATA_FILE} "
                f"(expected {expected})."
            )

    def _resize_input(self, height, width):
        """Sets the interpreter's input to [1, height, width, 3], or to the window when the
        model's litert.json says it cannot run at other sizes; returns the size set.

        Convolutions, depth_to_space and the tiled nearest upscales run at any size, so an axis
        shorter than the window runs unpadded: the SavedModel's border treatment, exactly.
        Only a bicubic_skip generator (a bicubic matrix of the window's size) gets zero-padded
        windows (see the module doc).

        Raises:
          ValueError: a model exported as resizable that does not answer at the new size.
        """
        if not self.resizable:
            height, width = self.window, self.window
        if (height, width) == self._input_hw:
            return self._input_hw
        try:
            self._interpreter.resize_tensor_input(
                self._input["index"], [1, height, width, 3], strict=False
            )
            allocate_quietly(self._interpreter)
            shape = list(self._interpreter.get_output_details()[0]["shape"])
        except (RuntimeError, ValueError) as e:
            raise ValueError(
                f"{self.model_file} cannot run at {width}x{height} although its "
                f"{METADATA_FILE} says resizable_input: {str(e).strip()[:200]}"
            ) from e
        if shape != [1, height * self.scale, width * self.scale, 3]:
            raise ValueError(
                f"{self.model_file} answers {shape} for a {width}x{height} input although its "
                f"{METADATA_FILE} says resizable_input."
            )
        self._input_hw = (height, width)
        return self._input_hw

    def _run(self, window):
        """float32 [h, w, 3] LR (h, w <= window) -> uint8 [>= h*s, >= w*s, 3], top left aligned."""
        height, width = window.shape[:2]
        input_height, input_width = self._resize_input(height, width)
        if (input_height, input_width) != (height, width):
            window = np.pad(window, ((0, input_height - height), (0, input_width - width), (0, 0)))
        self._interpreter.set_tensor(self._input["index"], window[np.newaxis])
        self._interpreter.invoke()
        return self._interpreter.get_tensor(self._output["index"])[0]

    def upscale_image(self, lr):
        """uint8 [H, W, 3] -> uint8 [H*s, W*s, 3], one interpreter call per tile core."""
        lr = np.asarray(lr)
        if lr.ndim != 3 or lr.shape[2] != 3 or lr.dtype != np.uint8 or 0 in lr.shape:
            raise ValueError(f"Expected a uint8 [H, W, 3] image, got {lr.dtype} {lr.shape}.")
        height, width = lr.shape[:2]
        s, size = self.scale, self.window
        pixels = lr.astype(np.float32) / np.float32(255.0)  # value_range.lr_from_uint8
        sr = np.empty((height * s, width * s, 3), np.uint8)
        for wy, y0, y1 in window_starts(height, self.tile_size, self.overlap):
            for wx, x0, x1 in window_starts(width, self.tile_size, self.overlap):
                out = self._run(pixels[wy : wy + size, wx : wx + size])
                sr[y0 * s : y1 * s, x0 * s : x1 * s] = out[
                    (y0 - wy) * s : (y1 - wy) * s, (x0 - wx) * s : (x1 - wx) * s
                ]
        return sr

    def upscale_array(self, images):
        """uint8 [N, H, W, 3] -> uint8 [N, H*s, W*s, 3]."""
        return np.stack([self.upscale_image(image) for image in images])


def define_flags():
    """The command line, defined when it runs rather than on import: the upscaler above can
    then be imported beside serving.upscale, whose --model/--input/--output share the names."""
    flags.DEFINE_string(
        "model",
        None,
        "EXPORT_BASE/NAME-litert (newest version), one version directory, or its model.tflite.",
    )
    flags.DEFINE_string("input", None, "An image file or a folder of images.")
    flags.DEFINE_string("output", None, "Output PNG file, or folder for a folder input.")
    flags.DEFINE_integer(
        "num_threads", None, "Interpreter CPU threads (default: the interpreter's own choice)."
    )
    flags.mark_flags_as_required(["model", "input", "output"])


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"Unexpected arguments: {argv[1:]}")
    options = flags.FLAGS
    try:
        jobs = upscale_files.plan(options.input, options.output)
        upscaler = LiteRTUpscaler(options.model, options.num_threads)
        for input_file, output_file in jobs:
            width, height = upscale_files.upscale_file(
                upscaler, input_file, output_file, contract.TENSOR_SIGNATURE
            )
            print(f"{input_file} -> {output_file} ({width}x{height})")
    except (OSError, ValueError) as e:
        sys.exit(f"error: {str(e).strip().splitlines()[0]}")


def run():
    """The entry point (python -m serving.upscale_litert)."""
    define_flags()
    app.run(main)


if __name__ == "__main__":
    run()
