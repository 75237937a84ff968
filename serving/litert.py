"""Exports a trained generator as a LiteRT (TFLite) model for phones and edge boxes.

Layout (beside, never inside, the SavedModel's EXPORT_BASE/NAME that TF Serving polls):

  EXPORT_BASE/NAME-litert/<version>/model.tflite   the generator for one fixed tile
  EXPORT_BASE/NAME-litert/<version>/litert.json    scale, tile, overlap, tensors, precision, ...

A separate model name because tensorflow_model_server --model_base_path=EXPORT_BASE/NAME loads
every integer folder there as a SavedModel, and would fail on (or, as the newest version, stop
serving at) a folder holding only a .tflite file. Versions follow serving.versions' rule and are
written under a hidden temporary name and renamed when complete, as export_lib does.

The model is the bare generator (not the string-decoding serving wrapper) for one fixed input
[1, T + 2 * overlap, T + 2 * overlap, 3] float32 LR in [0, 1], where T is the tile core side and
overlap the SavedModel's own (export_lib.default_overlap). Its output is already uint8 [0, 255]
(the generator's [-1, 1] scaled, rounded and clipped inside the model with value_range's rule),
so an app copies it into a bitmap and the tiler (serving.upscale_litert) crops the core of each
window exactly as the SavedModel's tiling does.

Precisions: float32; float16 (weights stored as float16, half the file; CPUs dequantize them once,
GPU delegates compute in float16); dynamic_int8 (weights int8, activations quantized on the fly:
a quarter of the file, no calibration data).
"""

import contextlib
import dataclasses
import functools
import hashlib
import io
import json
import posixpath
import tempfile
import warnings

import keras
import tensorflow as tf

import srgan_cli
from serving import export_lib, versions
from trainer import models, value_range

FLOAT32 = "float32"
FLOAT16 = "float16"
DYNAMIC_INT8 = "dynamic_int8"
PRECISIONS = (FLOAT32, FLOAT16, DYNAMIC_INT8)

MODEL_FILE = "model.tflite"
METADATA_FILE = "litert.json"
MODEL_NAME_SUFFIX = "-litert"
METADATA_FORMAT_VERSION = 1
INPUT_NAME = "lr"
OUTPUT_NAME = "sr"


def litert_model_name(model_name):
    """The folder a LiteRT export of `model_name` goes to: NAME-litert (see the module doc)."""
    if not model_name or model_name in (".", "..") or "/" in model_name or "\\" in model_name:
        raise ValueError(f"model name must be a single folder name, got {model_name!r}.")
    if model_name.endswith(MODEL_NAME_SUFFIX):
        return model_name
    return model_name + MODEL_NAME_SUFFIX


def check_precision(precision):
    if precision not in PRECISIONS:
        raise ValueError(
            f"Unknown LiteRT precision {precision!r}: choose one of {', '.join(PRECISIONS)}."
        )


_DYNAMIC_BICUBIC = models.bicubic_upscale


def _bicubic_as_matmul(images, scale):
    """models.bicubic_upscale for a static size, as two matrix products (LiteRT builtins only).

    tf.image.resize(bicubic) is linear and separable, so for a fixed tile it is A_h @ x @ A_w^T
    with A the resize of an identity matrix; LiteRT has no ResizeBicubic builtin (it would need
    the Flex delegate, which phone runtimes do not ship).
    """
    _, height, width, _ = images.shape
    if height is None or width is None:  # a trace the converter does not use
        return _DYNAMIC_BICUBIC(images, scale)

    def matrix(n):
        with tf.init_scope():  # computed once, eagerly, and stored as a constant
            eye = tf.eye(n, dtype=tf.float32)[tf.newaxis, :, :, tf.newaxis]  # [1, n, n, 1]
            # models.bicubic_upscale's rule (tf.image.resize bicubic), along the rows only.
            resized = tf.image.resize(eye, (n * scale, n), method="bicubic").numpy()
        return tf.constant(resized[0, :, :, 0])  # [n * scale, n]

    rows, cols = matrix(height), matrix(width)
    images = tf.einsum("ph,nhwc->npwc", rows, images)
    return tf.einsum("qw,npwc->npqc", cols, images)


@contextlib.contextmanager
def _static_bicubic():
    """Traces BicubicUpsample (generators with bicubic_skip) through _bicubic_as_matmul."""
    models.bicubic_upscale = _bicubic_as_matmul
    try:
        yield
    finally:
        models.bicubic_upscale = _DYNAMIC_BICUBIC


def _nearest_by_depth_to_space(images, scale):
    """Nearest-neighbour upscale by an integer factor with no size in the graph.

    depth_to_space of the channels tiled scale^2 times puts each pixel's own values in every
    cell of its scale x scale block: the same copies as a resize (nearest) or a broadcast and
    reshape, bit for bit. Traced at one input size, those two leave that size in the model (the
    converter folds tf.shape into constants), so the interpreter's resized input then fails;
    TILE and DEPTH_TO_SPACE take their sizes from the input at run time.
    """
    return tf.nn.depth_to_space(tf.tile(images, [1, 1, 1, scale * scale]), scale)


def _nearest_upsample_call(layer, inputs):
    """models.NearestUpsample.call (the compact generator's base) without a baked-in size."""
    upscaled = _nearest_by_depth_to_space(tf.cast(inputs, tf.float32), layer.scale)
    return tf.cast(upscaled * 2.0 - 1.0, layer.compute_dtype)


_NEAREST_UPSAMPLE_CALL = models.NearestUpsample.call
_UPSAMPLING2D_CALL = keras.layers.UpSampling2D.call


def _upsampling2d_call(layer, inputs):
    """keras UpSampling2D.call (rrdb's upsampling stages) without a baked-in size when nearest."""
    factor_h, factor_w = layer.size
    if (
        layer.interpolation != "nearest"
        or layer.data_format != "channels_last"
        or factor_h != factor_w
    ):
        return _UPSAMPLING2D_CALL(layer, inputs)
    return _nearest_by_depth_to_space(inputs, factor_h)


@contextlib.contextmanager
def _resizable_nearest():
    """Traces the generators' nearest-neighbour upscales through _nearest_by_depth_to_space."""
    models.NearestUpsample.call = _nearest_upsample_call
    keras.layers.UpSampling2D.call = _upsampling2d_call
    try:
        yield
    finally:
        models.NearestUpsample.call = _NEAREST_UPSAMPLE_CALL
        keras.layers.UpSampling2D.call = _UPSAMPLING2D_CALL


def window_size(tile_size, overlap):
    """The fixed input side of the model: a tile core with its context on both sides."""
    return tile_size + 2 * overlap


class _ToUint8(keras.layers.Layer):
    """The generator's [-1, 1] HR as uint8, rounded and clipped (value_range.hr_to_uint8)."""

    def call(self, hr):
        return value_range.hr_to_uint8(hr)


def convert(generator, window, precision=FLOAT32):
    """The LiteRT flatbuffer of `generator` for one [1, window, window, 3] float32 input.

    Converted from a Keras ExportArchive (inference mode) of a fixed-shape model around the
    generator, as from_keras_model does for Keras 3 but with its errors shown: given a plain
    tf.function over the generator (from_concrete_functions, or a tf.Module's SavedModel), TF
    2.21's converter keeps the weights as LiteRT resource variables that are never initialised
    (NaN outputs).

    Returns:
      bytes of model.tflite: float32 LR [0, 1] in, uint8 HR [0, 255] out.
    """
    check_precision(precision)
    lr = keras.Input(shape=(window, window, 3), batch_size=1, name=INPUT_NAME)
    model = keras.Model(lr, _ToUint8(name=OUTPUT_NAME)(generator(lr, training=False)))
    archive = keras.export.ExportArchive()
    archive.track(model)
    with tempfile.TemporaryDirectory() as saved_model_dir:
        # Keras prints the temporary SavedModel's signature; the tracing uses the static bicubic
        # and the size-free nearest upscales.
        with _static_bicubic(), _resizable_nearest(), contextlib.redirect_stdout(io.StringIO()):
            archive.add_endpoint(
                "serve",
                functools.partial(model.__call__, training=False),
                [tf.TensorSpec([1, window, window, 3], tf.float32, name=INPUT_NAME)],
            )
            archive.write_out(saved_model_dir)
        converter = tf.lite.TFLiteConverter.from_saved_model(saved_model_dir, ["serve"])
        converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS]
        if precision in (FLOAT16, DYNAMIC_INT8):
            converter.optimizations = [tf.lite.Optimize.DEFAULT]
        if precision == FLOAT16:
            converter.target_spec.supported_types = [tf.float16]
        return converter.convert()


def runs_at_smaller_sizes(model_bytes, window, scale):
    """Whether the interpreter, its input resized below the window, answers at the new size.

    True when no op holds the window's size (srresnet; compact and rrdb traced through
    _resizable_nearest); False for a bicubic_skip generator, whose bicubic upscale is a matrix
    product of the window's fixed size. Checked on the converted model, not assumed from the
    architecture: litert.json records it and the tiler pads windows only when it is False.
    """
    height, width = max(1, window - 3), max(1, window - 1)  # smaller, and not square
    with warnings.catch_warnings():  # its deprecation notice: the check needs no other runtime
        warnings.filterwarnings("ignore", message=r"[\s\S]*tf.lite.Interpreter is deprecated")
        interpreter = tf.lite.Interpreter(model_content=model_bytes)
    try:
        interpreter.resize_tensor_input(0, [1, height, width, 3], strict=False)
        with srgan_cli.stderr_without(("Created TensorFlow Lite XNNPACK delegate",)):
            interpreter.allocate_tensors()
        interpreter.set_tensor(
            interpreter.get_input_details()[0]["index"], tf.zeros([1, height, width, 3]).numpy()
        )
        interpreter.invoke()
        output = interpreter.get_tensor(interpreter.get_output_details()[0]["index"])
    except (RuntimeError, ValueError):
        return False
    return list(output.shape) == [1, height * scale, width * scale, 3]


def make_metadata(generator_config, precision, tile_size, overlap, model_bytes, checkpoint):
    """What litert.json records: everything an app needs to tile, and what was exported."""
    window = window_size(tile_size, overlap)
    scale = int(generator_config.scale)
    return {
        "format_version": METADATA_FORMAT_VERSION,
        "format": "litert",
        "model_file": MODEL_FILE,
        "model_bytes": len(model_bytes),
        "model_sha256": hashlib.sha256(model_bytes).hexdigest(),
        "precision": precision,
        "scale": scale,
        "tile_size": tile_size,
        "overlap": overlap,
        "input": {
            "shape": [1, window, window, 3],
            "dtype": "float32",
            "range": [0.0, 1.0],
            "layout": "NHWC RGB",
        },
        "output": {
            "shape": [1, window * scale, window * scale, 3],
            "dtype": "uint8",
            "range": [0, 255],
            "layout": "NHWC RGB",
        },
        # An image smaller than the window may run at its own size (the interpreter's input
        # resized); false: it must be zero-padded to the window (bicubic_skip's fixed matrices).
        "resizable_input": runs_at_smaller_sizes(model_bytes, window, scale),
        "generator": dataclasses.asdict(generator_config),
        "checkpoint": checkpoint,
        "tensorflow_version": tf.__version__,
    }


def _write(directory, name, data, mode):
    with tf.io.gfile.GFile(posixpath.join(directory, name), mode) as f:
        f.write(data)


def write_version(model_base_path, version, model_bytes, metadata):
    """Writes model.tflite + litert.json as MODEL_BASE/<version>, complete or not at all.

    Raises:
      FileExistsError: the version already exists (versions are never overwritten).
      ValueError: a version below 1.
    """
    with versions.staged_version(model_base_path, version) as (temp_dir, final_dir):
        _write(temp_dir, MODEL_FILE, model_bytes, "wb")
        _write(temp_dir, METADATA_FILE, json.dumps(metadata, indent=2, sort_keys=True), "w")
    return final_dir


def export_litert(
    model_dir,
    export_base,
    model_name,
    version=None,
    *,
    precision=FLOAT32,
    tile_size=128,
    weights=None,
    interpolate_checkpoint=None,
    alpha=None,
):
    """Loads a trained generator and writes it as EXPORT_BASE/NAME-litert/<version>/.

    Args:
      model_dir: trainer model_dir or checkpoint prefix (export_lib.load_export_generator).
      export_base: the directory holding one folder per model name.
      model_name: the served model name; the LiteRT export goes to NAME-litert.
      version: integer version; None: the next one after the newest present.
      precision: one of PRECISIONS.
      tile_size: the tile core side T in LR pixels; the model's input side is T + 2 * overlap,
        overlap being export_lib.default_overlap (the SavedModel's rule).
      weights, interpolate_checkpoint, alpha: see export_lib.load_export_generator.

    Returns:
      The written version directory.

    Raises:
      ValueError: a bad precision, tile size, model name or version, or weights options.
      FileExistsError: the version already exists.
    """
    check_precision(precision)
    if int(tile_size) < 1:
        raise ValueError(f"tile_size must be a positive number of LR pixels, got {tile_size}.")
    model_base_path = posixpath.join(export_base, litert_model_name(model_name))
    if version is not None and tf.io.gfile.exists(versions.version_dir(model_base_path, version)):
        write_version(model_base_path, version, b"", {})  # its FileExistsError, before converting
    generator, config, source = export_lib.load_export_generator(
        model_dir, weights, interpolate_checkpoint, alpha
    )
    overlap = export_lib.default_overlap(config)
    model_bytes = convert(generator, window_size(int(tile_size), overlap), precision)
    metadata = make_metadata(config, precision, int(tile_size), overlap, model_bytes, source)
    return write_version(model_base_path, version, model_bytes, metadata)
