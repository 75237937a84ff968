"""Exports a trained generator as a versioned SavedModel for TF Serving.

Layout (what `tensorflow_model_server --model_base_path=EXPORT_BASE/NAME` polls):

  EXPORT_BASE/NAME/<version>/saved_model.pb, variables/, assets.extra/tf_serving_warmup_requests

A version is written under a hidden temporary name beside its final place and renamed when
complete: TF Serving and serving.local_server only look at integer directory names, so they
never pick up a half-written version. An existing version is never overwritten.
"""

import dataclasses
import io
import math
import posixpath

import keras
import numpy as np
import tensorflow as tf
from PIL import Image
from tensorflow_serving.apis import model_pb2, predict_pb2, prediction_log_pb2

from serving import contract, versions
from serving.serving_module import SuperResolutionModule, TilingConfig
from trainer import config as trainer_config
from trainer import generator_store, models

WARMUP_IMAGE_SIDES = (16, 48)
# What the serving graph's generator computes in; its input and output stay uint8 / encoded bytes.
FLOAT32, BFLOAT16, FLOAT16 = "float32", "bfloat16", "float16"
PRECISIONS = (FLOAT32, BFLOAT16, FLOAT16)
# Deep generators get tile context up to this many LR pixels by default (see default_overlap).
MAX_DEFAULT_OVERLAP = 32


def default_overlap(generator_config):
    """The tile context an export uses unless told: enough for a deep generator, not more.

    srresnet keeps TilingConfig's 16 (within 1/255 of untiled for the paper generator). rrdb and
    compact get their receptive-field radius + 1, at most MAX_DEFAULT_OVERLAP: the compact
    reference (16 convs) reaches 19, exact; the rrdb reference has a radius of ~348 LR pixels
    (345 stacked convs), far beyond any tile, and gets 32 (Real-ESRGAN's own tiled inference pads
    tiles by 10). Tiny test-size generators fall under the cap and tile exactly.
    """
    if generator_config.architecture == trainer_config.SRRESNET:
        return TilingConfig.overlap
    radius = generator_store.receptive_radius(generator_config)
    return min(math.ceil(radius) + 1, MAX_DEFAULT_OVERLAP)


def tiling_for(generator_config, tile_size=None, overlap=None, max_input_pixels=None):
    """A TilingConfig from optional values (None: TilingConfig's default; overlap's is
    default_overlap(generator_config))."""
    values = {"tile_size": tile_size, "max_input_pixels": max_input_pixels}
    return TilingConfig(
        overlap=default_overlap(generator_config) if overlap is None else overlap,
        **{name: value for name, value in values.items() if value is not None},
    )


def interpolate_weights(target, other, alpha):
    """target <- alpha * target + (1 - alpha) * other, every variable (ESRGAN's network
    interpolation, which blends whole state dicts, BatchNorm statistics included)."""
    for mine, theirs in zip(target.weights, other.weights, strict=True):
        mine.assign(alpha * mine.numpy() + (1.0 - alpha) * theirs.numpy())


def load_export_generator(model_dir, weights=None, interpolate_checkpoint=None, alpha=None):
    """The generator an export serves: a checkpoint's, or two checkpoints' interpolation.

    Args:
      model_dir: trainer model_dir (newest checkpoint: gan, else pretrain) or a prefix.
      weights: "ema", "raw", or None (the EMA when a checkpoint has one); for both models.
      interpolate_checkpoint: the PSNR-oriented model (ESRGAN DNI): a model_dir (its pretrain
        phase's newest checkpoint) or a checkpoint prefix; None: no interpolation.
      alpha: with interpolate_checkpoint, the weight of `model_dir`'s (GAN) model in [0, 1].

    Returns:
      (keras.Model, GeneratorConfig, description of the weights for the metadata/messages)

    Raises:
      ValueError: alpha without a second model (or the reverse), alpha outside [0, 1], or two
        models built from different GeneratorConfigs.
    """
    generator, config, prefix = generator_store.load_generator(model_dir, weights)
    source = f"{prefix} ({generator.restored_weights})"
    if interpolate_checkpoint is None:
        if alpha is not None:
            raise ValueError("--alpha needs --interpolate_checkpoint (the PSNR model).")
        return generator, config, source
    if alpha is None or not 0.0 <= alpha <= 1.0:
        raise ValueError(f"--alpha must be in [0, 1] to interpolate, got {alpha}.")
    other, other_config, other_prefix = generator_store.load_generator(
        interpolate_checkpoint, weights, phase=trainer_config.PRETRAIN
    )
    if other_config != config:
        raise ValueError(
            f"Cannot interpolate {prefix} ({config}) with {other_prefix} ({other_config}): "
            "network interpolation needs two generators of the same GeneratorConfig."
        )
    interpolate_weights(generator, other, alpha)
    return (
        generator,
        config,
        f"{alpha:g} * {source} + {1.0 - alpha:g} * {other_prefix} ({other.restored_weights})",
    )


class FoldedBatchNorm(keras.layers.Layer):
    """Where a BatchNormalization stood whose inference transform is folded into its conv."""

    def call(self, inputs, training=None, mask=None):
        del training, mask
        return inputs


def _foldable_batch_norms(model):
    """Indices (in model.layers) of the BatchNormalizations that fold into the conv before them:
    channels-last, fed by a biased Conv2D whose output nothing else reads."""
    index = {id(layer): i for i, layer in enumerate(model.layers)}
    folds = {}
    for i, layer in enumerate(model.layers):
        if not isinstance(layer, keras.layers.BatchNormalization) or layer.axis not in (-1, 3):
            continue
        conv = layer.input._keras_history[0]  # the layer that made BN's input (Keras 3)
        if (
            isinstance(conv, keras.layers.Conv2D)
            and conv.use_bias
            and len(conv._outbound_nodes) == 1
        ):
            folds[i] = index[id(conv)]
    return folds


def _fold(conv, batch_norm):
    """[kernel, bias] of conv followed by batch_norm in inference mode, in float64."""
    kernel, bias = (w.astype(np.float64) for w in conv.get_weights())
    mean = batch_norm.moving_mean.numpy().astype(np.float64)
    variance = batch_norm.moving_variance.numpy().astype(np.float64)
    gamma = batch_norm.gamma.numpy().astype(np.float64) if batch_norm.scale else 1.0
    beta = batch_norm.beta.numpy().astype(np.float64) if batch_norm.center else 0.0
    factor = gamma / np.sqrt(variance + batch_norm.epsilon)
    return [kernel * factor, (bias - mean) * factor + beta]


class SpaceToDepthConv2D(keras.layers.Layer):
    """A stride-1 "same" Conv2D computed a block of pixels at a time: space_to_depth(block),
    a conv with the kernel rearranged (split_kernel), depth_to_space(block).

    The same sums as the conv it replaces (exact up to float summation order, borders included:
    the zero padding of the blocked input is the zero padding of the original). For SRResNet's
    last conv (9x9, 64 -> 3 at the HR size) it is a 5x5 conv 256 -> 12 at half the size: 23%
    more multiply-adds, but 12 output channels vectorise where 3 do not (~2.9x faster alone).
    The input's height and width must be multiples of block_size. The output is float32
    whatever the compute dtype (it is rounded to uint8 next).
    """

    def __init__(self, filters, kernel_size, block_size=2, **kwargs):
        super().__init__(**kwargs)
        self.filters, self.kernel_size, self.block_size = filters, kernel_size, block_size

    def build(self, input_shape):
        size = len(_block_offsets(self.kernel_size, self.block_size))
        blocks = self.block_size**2
        self.kernel = self.add_weight(
            name="kernel", shape=(size, size, blocks * input_shape[-1], blocks * self.filters)
        )
        self.bias = self.add_weight(
            name="bias", shape=(blocks * self.filters,), initializer="zeros"
        )

    def call(self, inputs):
        x = tf.nn.space_to_depth(tf.cast(inputs, self.compute_dtype), self.block_size)
        x = tf.nn.conv2d(x, self.kernel, 1, "SAME") + self.bias
        return tf.cast(tf.nn.depth_to_space(x, self.block_size), tf.float32)

    def compute_output_shape(self, input_shape):
        return (*input_shape[:-1], self.filters)

    def get_config(self):
        return {
            **super().get_config(),
            "filters": self.filters,
            "kernel_size": self.kernel_size,
            "block_size": self.block_size,
        }


def _block_offsets(kernel_size, block_size):
    """The block offsets a kernel_size "same" conv reaches from a block: [-m, m], m the
    radius in blocks, rounded up (symmetric, so a "same" conv pads the blocked input right)."""
    reach = -(-(kernel_size // 2) // block_size)
    return range(-reach, reach + 1)


def split_kernel(kernel, bias, block_size):
    """[kernel, bias] of SpaceToDepthConv2D from a Conv2D's (odd square kernel), in float64.

    Output pixel (block * p + e) of the original reads input (block * p + e + a) for offsets a in
    [-r, r]; that is input block (p + m) at position d with block * m + d = e + a. So the blocked
    kernel's [m, (d, c), (e, o)] is the original's [d - e + block * m + r, c, o], or 0 where that
    falls outside it. space_to_depth / depth_to_space order channels (row, column, channel).
    """
    size, _, channels, filters = kernel.shape
    radius, offsets = size // 2, _block_offsets(size, block_size)
    split = np.zeros(
        (len(offsets),) * 2 + (block_size,) * 2 + (channels,) + (block_size,) * 2 + (filters,)
    )
    positions = range(block_size)
    for (i, m), (j, n) in (
        (pair, other) for pair in enumerate(offsets) for other in enumerate(offsets)
    ):
        for di, dj, ei, ej in (
            (a, b, c, d) for a in positions for b in positions for c in positions for d in positions
        ):
            row, column = block_size * m + di - ei + radius, block_size * n + dj - ej + radius
            if 0 <= row < size and 0 <= column < size:
                split[i, j, di, dj, :, ei, ej, :] = kernel[row, column]
    blocks = block_size**2
    shape = (len(offsets), len(offsets), blocks * channels, blocks * filters)
    return [split.reshape(shape), np.tile(np.asarray(bias, np.float64), blocks)]


def _build_under_policy(config, policy):
    previous = keras.mixed_precision.global_policy()
    keras.mixed_precision.set_global_policy(policy)
    try:
        return generator_store.build_generator(config)
    finally:
        keras.mixed_precision.set_global_policy(previous)


def _split_conv(model, config):
    """The index (in model.layers) of the conv SpaceToDepthConv2D computes, or None.

    SRResNet's last conv (a 9x9 "same" conv to 3 channels at the HR size, ~11% of the
    multiply-adds but the slowest layer: 3 output channels vectorise poorly) when the last
    sub-pixel stage is x2, so its input's sides are even. Not x3 (a 3x3 block costs 2.8x the
    multiply-adds) nor the 3x3 last convs of rrdb / compact (4x).
    """
    if config.architecture != trainer_config.SRRESNET:
        return None
    if models.upsample_factors(config.scale)[-1] != 2:
        return None
    convs = [i for i, layer in enumerate(model.layers) if isinstance(layer, keras.layers.Conv2D)]
    return convs[-1] if convs else None


def with_precision(generator, config, precision, split_output_conv=True):
    """A copy of `generator` that computes in `precision`, its weights cast once, here.

    bfloat16 / float16 build the architecture again under that Keras dtype policy (variables and
    compute in the low precision: mixed_bfloat16 casts every weight on every call and measured
    slower), with each inference-mode BatchNormalization folded into the conv before it (the
    fold is computed in float64, so BN's scale does not magnify the rounding of a low-precision
    kernel, and its casts and arithmetic leave the graph). The builders pin the layers that must
    stay float32: the last conv (its output is rounded to uint8: bfloat16's 8-bit significand
    would put up to a quarter of a grey level of error on it), the bicubic / nearest skip and
    the final add; compact's depth_to_space after that conv too.

    At every precision, SRResNet's last conv (x2 / x4) is computed as a SpaceToDepthConv2D in
    float32 (_split_conv): the same sums in another order, ~2.9x faster alone; float32 output
    within ~3e-6 of the plain conv's per unit of output magnitude. float32 without it (or for
    other generators) returns `generator` itself, the export as it always was.

    Args:
      generator, config: the Keras generator and the GeneratorConfig it was built from.
      precision: one of PRECISIONS.
      split_output_conv: False keeps the plain last conv (benchmarks.serving's "before").

    Raises:
      ValueError: an unknown precision, or a generator that is not the model `config` builds.
    """
    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {PRECISIONS}, got {precision!r}.")
    low = _build_under_policy(config, precision)
    kinds = [type(layer) for layer in generator.layers]
    if kinds != [type(layer) for layer in low.layers]:
        raise ValueError(f"{generator.name} is not the model {config} builds; cannot recast it.")
    split = _split_conv(generator, config) if split_output_conv else None
    if precision == FLOAT32 and split is None:
        return generator
    # float32 keeps its BatchNormalizations: folding them measured no faster there.
    folds = _foldable_batch_norms(generator) if precision != FLOAT32 else {}
    folded_names = {low.layers[i].name for i in folds}
    split_name = None if split is None else low.layers[split].name

    def clone_layer(layer):
        if layer.name in folded_names:
            return FoldedBatchNorm(name=layer.name, dtype=layer.dtype_policy)
        if layer.name == split_name:
            size = layer.kernel_size[0]
            # float32 whatever the policy: computing it in bfloat16 measured ~10% faster
            # overall but rounds the values about to be rounded to uint8.
            return SpaceToDepthConv2D(layer.filters, size, 2, name=layer.name, dtype="float32")
        return layer.__class__.from_config(layer.get_config())

    copy = keras.models.clone_model(low, clone_function=clone_layer)
    convs = {conv: generator.layers[bn] for bn, conv in folds.items()}
    for i, (source, target) in enumerate(zip(generator.layers, copy.layers, strict=True)):
        if i in folds:
            continue
        weights = _fold(source, convs[i]) if i in convs else source.get_weights()
        if i == split:
            weights = split_kernel(*weights, 2)
        # float32 in: the variables' assign rounds to their dtype (round to nearest even).
        target.set_weights([np.asarray(w, np.float32) for w in weights])
    return copy


def _warmup_png(side):
    rng = np.random.default_rng(side)
    buffer = io.BytesIO()
    Image.fromarray(rng.integers(0, 256, (side, side, 3), dtype=np.uint8)).save(buffer, "PNG")
    return buffer.getvalue()


def warmup_logs(model_name):
    """PredictionLog records exercising both signatures at a couple of sizes."""
    logs = []
    for side in WARMUP_IMAGE_SIDES:
        png = _warmup_png(side)
        pixels = np.asarray(Image.open(io.BytesIO(png)))[np.newaxis]
        for signature, name, value in (
            (contract.BYTES_SIGNATURE, contract.BYTES_INPUT, [png]),
            (contract.TENSOR_SIGNATURE, contract.TENSOR_INPUT, pixels),
        ):
            request = predict_pb2.PredictRequest(
                model_spec=model_pb2.ModelSpec(name=model_name, signature_name=signature)
            )
            request.inputs[name].CopyFrom(tf.make_tensor_proto(value))
            logs.append(
                prediction_log_pb2.PredictionLog(
                    predict_log=prediction_log_pb2.PredictLog(request=request)
                )
            )
    return logs


def write_warmup(export_dir, model_name):
    path = posixpath.join(export_dir, contract.WARMUP_FILE)
    tf.io.gfile.makedirs(posixpath.dirname(path))
    with tf.io.TFRecordWriter(path) as writer:
        for log in warmup_logs(model_name):
            writer.write(log.SerializeToString())
    return path


def save_module(module, export_dir, model_name):
    """Saves `module` with its signatures and the warm-up requests to `export_dir`."""
    tf.saved_model.save(module, export_dir, signatures=module.signature_functions())
    write_warmup(export_dir, model_name)


def export_generator(
    generator,
    generator_config,
    export_base,
    model_name,
    version=None,
    tiling_config=None,
    checkpoint=None,
    precision=FLOAT32,
    split_output_conv=True,
):
    """Exports a Keras generator ([0,1] LR -> [-1,1] HR) as EXPORT_BASE/NAME/<version>.

    The version records its scale, generator configuration, tiling and precision in
    contract.METADATA_FILE (serving.versions.read_metadata), so evaluation and serving never ask
    for them again.

    Args:
      generator: the Keras generator.
      generator_config: the trainer's GeneratorConfig it was built from (holds the scale).
      export_base: the directory holding one folder per model name.
      model_name: the serving model name.
      version: integer version; None picks the next one after the newest present.
      tiling_config: serving_module.TilingConfig (None: the defaults).
      checkpoint: the checkpoint prefix the weights came from, recorded in the metadata.
      precision: one of PRECISIONS, what the generator computes in (with_precision).
      split_output_conv: see with_precision (False: the last conv as built, for benchmarks).

    Returns:
      The final export directory.

    Raises:
      FileExistsError: the version already exists.
      ValueError: a model name that is not a single path component, a bad version or precision.
    """
    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {PRECISIONS}, got {precision!r}.")
    if not model_name or model_name in (".", "..") or "/" in model_name or "\\" in model_name:
        raise ValueError(f"model name must be a single folder name, got {model_name!r}.")
    tiling_config = tiling_config or TilingConfig()
    model_base_path = posixpath.join(export_base, model_name)
    with versions.staged_version(model_base_path, version) as (temp_dir, final_dir):
        served = with_precision(generator, generator_config, precision, split_output_conv)
        module = SuperResolutionModule(served, generator_config.scale, tiling_config)
        metadata = versions.make_metadata(
            dataclasses.asdict(generator_config),
            dataclasses.asdict(tiling_config),
            checkpoint,
            precision,
        )
        save_module(module, temp_dir, model_name)
        versions.write_metadata(temp_dir, metadata)
    return final_dir


def export_from_model_dir(
    model_dir,
    export_base,
    model_name,
    version=None,
    tiling_config=None,
    *,
    weights=None,
    interpolate_checkpoint=None,
    alpha=None,
    tile_size=None,
    max_input_pixels=None,
    precision=FLOAT32,
):
    """Loads the newest generator of a trainer model_dir (or a checkpoint prefix) and exports it.

    Args:
      model_dir, export_base, model_name, version: see export_generator.
      tiling_config: the TilingConfig; None: tiling_for(the generator's config, tile_size,
        None, max_input_pixels), i.e. default_overlap for the generator.
      weights, interpolate_checkpoint, alpha: see load_export_generator.
      tile_size, max_input_pixels: without tiling_config (None: TilingConfig's defaults).
      precision: what the served generator computes in (PRECISIONS; see with_precision).

    Returns:
      (export directory, what was exported: checkpoint prefix(es) and weights)
    """
    generator, config, source = load_export_generator(
        model_dir, weights, interpolate_checkpoint, alpha
    )
    if tiling_config is None:
        tiling_config = tiling_for(config, tile_size, None, max_input_pixels)
    export_dir = export_generator(
        generator,
        config,
        export_base,
        model_name,
        version,
        tiling_config,
        checkpoint=source,
        precision=precision,
    )
    return export_dir, source
