"""Generators and discriminators as Keras 3 builder functions, one per architecture.

  srresnet_generator     SRResNet (Ledig et al. 2017, SRGAN)
  rrdb_generator         RRDBNet (Wang et al. 2018, ESRGAN; BasicSR rrdbnet_arch.py)
  compact_generator      SRVGGNetCompact (Real-ESRGAN; BasicSR srvgg_arch.py)
  srgan_discriminator    the SRGAN paper's VGG-style discriminator: one logit per image
  unet_discriminator     Real-ESRGAN's UNetDiscriminatorSN: one logit per pixel, any size

Value ranges follow trainer.value_range: every generator takes LR in [0, 1] and returns HR in
[-1, 1] (linear output, clipped only when converted to uint8); the discriminators take HR-range
images. The BasicSR designs are re-written here in Keras, not ported code.
"""

import keras
import tensorflow as tf
from keras import layers

from data_prep import schema


def upsample_factors(scale):
    """The sub-pixel stages of a scale: x2 per factor of 2, then x3 per factor of 3 (EDSR, BasicSR).

    Raises:
      ValueError: a scale outside data_prep.schema.SCALES.
    """
    if scale not in schema.SCALES:
        raise ValueError(f"scale must be one of {schema.SCALES}, got {scale}.")
    factors = []
    for factor in (2, 3):
        while scale % factor == 0:
            factors.append(factor)
            scale //= factor
    return tuple(factors)


def bicubic_upscale(images, scale):
    """Bicubic upscale by an integer factor, in the input's value range (float32 [N, h, w, C]).

    The one bicubic rule of the project (the generator's skip, evaluation's baseline, the image
    grids): tf.image.resize(method="bicubic") without antialias (upscaling needs none); on the
    MATLAB-made LR files of Set5 it gives the published 28.42 dB. Not clipped.
    """
    size = tf.shape(images)[1:3] * scale
    return tf.image.resize(images, size, method="bicubic")


def bicubic_upscale_uint8(images_uint8, scale):
    """uint8 [N, h, w, 3] -> uint8 [N, h*s, w*s, 3]: bicubic_upscale, rounded and clipped."""
    upscaled = bicubic_upscale(tf.cast(images_uint8, tf.float32), scale)
    return tf.cast(tf.clip_by_value(tf.round(upscaled), 0.0, 255.0), tf.uint8)


class SubpixelUpsample(layers.Layer):
    """depth_to_space by `block_size` (the paper's sub-pixel convolution shuffle)."""

    def __init__(self, block_size=2, **kwargs):
        super().__init__(**kwargs)
        self.block_size = block_size

    def call(self, inputs):
        return tf.nn.depth_to_space(inputs, self.block_size)

    def get_config(self):
        return {**super().get_config(), "block_size": self.block_size}


class BicubicUpsample(layers.Layer):
    """Bicubic upscale by an integer factor, mapped from the LR to the HR value range."""

    def __init__(self, scale, **kwargs):
        super().__init__(**kwargs)
        self.scale = scale

    def call(self, inputs):
        upscaled = bicubic_upscale(tf.cast(inputs, tf.float32), self.scale)
        return tf.cast(upscaled * 2.0 - 1.0, self.compute_dtype)

    def get_config(self):
        return {**super().get_config(), "scale": self.scale}


class NearestUpsample(layers.Layer):
    """Nearest-neighbour upscale by an integer factor, mapped from the LR to the HR value range."""

    def __init__(self, scale, **kwargs):
        super().__init__(**kwargs)
        self.scale = scale

    def call(self, inputs):
        # Each pixel repeated scale x scale times (what resize "nearest" gives at an integer
        # factor) by a broadcast and a reshape: no resize op, so a LiteRT model converted for
        # one input size still runs at another after the interpreter resizes its input.
        x = tf.cast(inputs, tf.float32)
        shape = tf.shape(x)
        s = self.scale
        tiled = tf.broadcast_to(
            x[:, :, None, :, None, :], [shape[0], shape[1], s, shape[2], s, shape[3]]
        )
        upscaled = tf.reshape(tiled, [shape[0], shape[1] * s, shape[2] * s, shape[3]])
        return tf.cast(upscaled * 2.0 - 1.0, self.compute_dtype)

    def get_config(self):
        return {**super().get_config(), "scale": self.scale}


class ScaledResidual(layers.Layer):
    """x + scale * y: ESRGAN's residual scaling (0.2), which keeps a deep BN-free trunk stable."""

    def __init__(self, scale=0.2, **kwargs):
        super().__init__(**kwargs)
        self.scale = scale

    def call(self, inputs):
        x, y = inputs
        return x + tf.cast(self.scale, y.dtype) * y

    def get_config(self):
        return {**super().get_config(), "scale": self.scale}


class ResizeLike(layers.Layer):
    """Bilinear resize of the first input to the second's height and width (U-Net skips).

    Resizing to the skip's own size instead of a fixed x2 makes odd patch sides work too (a
    stride-2 "same" conv rounds the size up). tf.image.resize uses half-pixel centres, as
    PyTorch's interpolate(mode="bilinear", align_corners=False) in BasicSR.
    """

    def call(self, inputs):
        x, reference = inputs
        resized = tf.image.resize(tf.cast(x, tf.float32), tf.shape(reference)[1:3], "bilinear")
        return tf.cast(resized, self.compute_dtype)


class SpectralNormConv2D(layers.Conv2D):
    """Conv2D whose kernel is divided by its largest singular value (Miyato et al. 2018).

    The kernel variable stays the trainable parameter and the normalised kernel is computed
    from it in every call, so gradients flow through sigma as in PyTorch's spectral_norm
    (BasicSR's UNetDiscriminatorSN). keras.layers.SpectralNormalization instead overwrites the
    trainable kernel with kernel / sigma on every training call (no gradient through sigma, and
    the optimizer's moments then refer to a rewritten variable), which is why it is not used.

    Sigma is estimated by one power iteration per training call on the kernel reshaped to
    [-1, filters]; the iterate `sn_u` is a non-trainable on-read variable (saved in checkpoints)
    that every replica computes identically from the mirrored kernel and writes locally.
    The power iteration runs in float32 (the layer does not autocast its variables) and the
    normalised kernel is cast to the compute dtype for the convolution.
    """

    def __init__(self, *args, **kwargs):
        kwargs.setdefault("autocast", False)
        super().__init__(*args, **kwargs)

    def build(self, input_shape):
        super().build(input_shape)
        # On-read: each replica writes its own copy (no merge_call, so an XLA-compiled replica
        # step can update it); the copies stay equal because every replica computes the same
        # iterate from the mirrored kernel, and a checkpoint saves the first replica's.
        self.sn_u = keras.Variable(
            keras.initializers.RandomNormal(0.0, 1.0)((self.filters,)),
            name="sn_u",
            trainable=False,
            aggregation="only_first_replica",
            synchronization="on_read",
        )

    def normalized_kernel(self, training=False):
        """kernel / sigma(kernel), float32; updates `sn_u` when training."""
        kernel = tf.convert_to_tensor(self.kernel)
        matrix = tf.reshape(kernel, [-1, self.filters])
        u = tf.convert_to_tensor(self.sn_u)
        v = tf.stop_gradient(tf.math.l2_normalize(tf.linalg.matvec(matrix, u)))
        u = tf.stop_gradient(tf.math.l2_normalize(tf.linalg.matvec(matrix, v, transpose_a=True)))
        sigma = tf.tensordot(v, tf.linalg.matvec(matrix, u), axes=1)
        if training:
            self.sn_u.assign(u)
        return kernel / sigma

    def call(self, inputs, training=False):
        kernel = tf.cast(self.normalized_kernel(training), self.compute_dtype)
        outputs = self.convolution_op(inputs, kernel)
        if self.use_bias:
            outputs = outputs + tf.cast(self.bias, self.compute_dtype)
        return outputs if self.activation is None else self.activation(outputs)


def _prelu():
    return layers.PReLU(shared_axes=[1, 2])


def _leaky_relu():
    return layers.LeakyReLU(negative_slope=0.2)


def _batch_norm():
    # Synchronised across replicas under tf.distribute; a plain BN on one device.
    return layers.BatchNormalization(synchronized=True, momentum=0.9)


def _residual_block(x, channels):
    y = layers.Conv2D(channels, 3, padding="same")(x)
    y = _batch_norm()(y)
    y = _prelu()(y)
    y = layers.Conv2D(channels, 3, padding="same")(y)
    y = _batch_norm()(y)
    return layers.Add()([x, y])


def srresnet_generator(scale, num_blocks=16, channels=64, bicubic_skip=False, name="srresnet"):
    """SRResNet: 9x9 conv + PReLU, residual blocks, conv-BN + global skip, sub-pixel stages.

    Each stage is a 3x3 conv to channels * f^2, depth_to_space(f) and PReLU: f = 2 per factor of
    2 (the paper), one f = 3 stage for x3 (as EDSR does).

    Args:
      scale: one of data_prep.schema.SCALES.
      num_blocks: residual blocks (16 in the paper).
      channels: feature channels (64 in the paper).
      bicubic_skip: add the bicubic upscale of the input to the output, so the network learns
        only the residual (not in the paper; converges much faster on short CPU runs).
      name: model name.

    Returns:
      A fully convolutional keras.Model: [N, H, W, 3] in [0, 1] -> [N, H*s, W*s, 3] in [-1, 1].
    """
    factors = upsample_factors(scale)
    inputs = keras.Input(shape=(None, None, 3), name="lr")
    x = layers.Conv2D(channels, 9, padding="same")(inputs)
    x = head = _prelu()(x)
    for _ in range(num_blocks):
        x = _residual_block(x, channels)
    x = layers.Conv2D(channels, 3, padding="same")(x)
    x = _batch_norm()(x)
    x = layers.Add()([head, x])
    for factor in factors:
        x = layers.Conv2D(channels * factor**2, 3, padding="same")(x)
        x = SubpixelUpsample(factor)(x)
        x = _prelu()(x)
    # With the bicubic skip, a zero-initialised last conv makes the untrained model exactly
    # bicubic, so training can only start from the baseline and improve on it.
    last_init = "zeros" if bicubic_skip else "glorot_uniform"
    outputs = layers.Conv2D(3, 9, padding="same", kernel_initializer=last_init, dtype="float32")(x)
    if bicubic_skip:
        bicubic = BicubicUpsample(scale, dtype="float32")(inputs)
        outputs = layers.Add(dtype="float32")([outputs, bicubic])
    return keras.Model(inputs, outputs, name=name)


def _rdb_conv(filters):
    # BasicSR's default_init_weights(scale=0.1) for the dense blocks: Kaiming-normal (fan_in,
    # gain sqrt(2)) times 0.1, i.e. variance 0.02 / fan_in; without it 23 RRDBs start unstable.
    return layers.Conv2D(
        filters,
        3,
        padding="same",
        kernel_initializer=keras.initializers.VarianceScaling(0.02, "fan_in", "untruncated_normal"),
    )


def _residual_dense_block(x, channels, growth):
    """5 densely connected convs (4 x growth + LeakyReLU, then back to channels), scaled x0.2."""
    features = [x]
    for _ in range(4):
        inputs = features[0] if len(features) == 1 else layers.Concatenate()(features)
        features.append(_leaky_relu()(_rdb_conv(growth)(inputs)))
    y = _rdb_conv(channels)(layers.Concatenate()(features))
    return ScaledResidual(0.2)([x, y])


def _rrdb(x, channels, growth):
    """Residual-in-residual dense block: 3 dense blocks and a x0.2-scaled skip around them."""
    y = x
    for _ in range(3):
        y = _residual_dense_block(y, channels, growth)
    return ScaledResidual(0.2)([x, y])


def rrdb_generator(scale, num_blocks=23, channels=64, growth=32, bicubic_skip=False, name="rrdb"):
    """RRDBNet (ESRGAN): conv, RRDB trunk + conv + skip, nearest upsampling, conv_hr, conv_last.

    No batch normalisation; LeakyReLU(0.2). Each upsampling stage is a nearest-neighbour
    upscale then a 3x3 conv + LeakyReLU: x2 per factor of 2, one x3 stage for x3. At x4 with
    the reference sizes (23 RRDBs, 64 channels, growth 32) it has BasicSR's 16,697,987
    parameters.

    Args:
      scale: one of data_prep.schema.SCALES.
      num_blocks: RRDBs (23).
      channels: trunk features (64).
      growth: channels added by each dense-block conv (32).
      bicubic_skip: add the bicubic upscale of the input (zero-initialised conv_last).
      name: model name.

    Returns:
      A fully convolutional keras.Model: [N, H, W, 3] in [0, 1] -> [N, H*s, W*s, 3] in [-1, 1].
    """
    factors = upsample_factors(scale)
    inputs = keras.Input(shape=(None, None, 3), name="lr")
    head = layers.Conv2D(channels, 3, padding="same")(inputs)
    x = head
    for _ in range(num_blocks):
        x = _rrdb(x, channels, growth)
    x = layers.Conv2D(channels, 3, padding="same")(x)
    x = layers.Add()([head, x])
    for factor in factors:
        x = layers.UpSampling2D(factor, interpolation="nearest")(x)
        x = _leaky_relu()(layers.Conv2D(channels, 3, padding="same")(x))
    x = _leaky_relu()(layers.Conv2D(channels, 3, padding="same")(x))
    last_init = "zeros" if bicubic_skip else "glorot_uniform"
    outputs = layers.Conv2D(3, 3, padding="same", kernel_initializer=last_init, dtype="float32")(x)
    if bicubic_skip:
        bicubic = BicubicUpsample(scale, dtype="float32")(inputs)
        outputs = layers.Add(dtype="float32")([outputs, bicubic])
    return keras.Model(inputs, outputs, name=name)


def compact_generator(scale, num_blocks=16, channels=64, bicubic_skip=False, name="compact"):
    """SRVGGNetCompact (Real-ESRGAN): a plain conv body, one sub-pixel shuffle, an upscaled base.

    conv + PReLU, `num_blocks` x (conv + PReLU), a conv to 3 * scale^2 channels, one
    depth_to_space(scale), plus the nearest-neighbour upscale of the input (bicubic with
    bicubic_skip). PReLU has one slope per channel (initialised at 0.25, as PyTorch's). At x4
    with the reference sizes (16 convs, 64 channels) it has 621,424 parameters.

    Args:
      scale: one of data_prep.schema.SCALES.
      num_blocks: body convs (BasicSR's num_conv, 16).
      channels: features (64).
      bicubic_skip: the base is the bicubic upscale instead of the nearest-neighbour one.
      name: model name.

    Returns:
      A fully convolutional keras.Model: [N, H, W, 3] in [0, 1] -> [N, H*s, W*s, 3] in [-1, 1].
    """
    upsample_factors(scale)  # checks the scale
    inputs = keras.Input(shape=(None, None, 3), name="lr")
    x = inputs
    for _ in range(num_blocks + 1):
        x = layers.Conv2D(channels, 3, padding="same")(x)
        x = layers.PReLU(alpha_initializer=keras.initializers.Constant(0.25), shared_axes=[1, 2])(x)
    x = layers.Conv2D(3 * scale**2, 3, padding="same", dtype="float32")(x)
    x = SubpixelUpsample(scale, dtype="float32")(x)
    upsample = BicubicUpsample if bicubic_skip else NearestUpsample
    base = upsample(scale, dtype="float32")(inputs)
    outputs = layers.Add(dtype="float32")([x, base])
    return keras.Model(inputs, outputs, name=name)


def unet_discriminator(base_channels=64, name="unet_discriminator"):
    """Real-ESRGAN's UNetDiscriminatorSN: a U-Net of spectrally normalised convs, per-pixel logits.

    Three stride-2 4x4 convs down (64 -> 128 -> 256 -> 512 at the reference width), three
    bilinear-upsampled 3x3 convs up with additive skips, two more 3x3 convs and a 3x3 conv to
    one logit per pixel. Spectral norm wraps every conv except the first and the last (as in
    BasicSR's UNetDiscriminatorSN); LeakyReLU(0.2). Fully convolutional: any patch size.

    Returns:
      A keras.Model: [N, H, W, 3] in [-1, 1] -> float32 logits [N, H, W, 1].
    """
    c = base_channels

    def sn_conv(filters, kernel, strides=1):
        return SpectralNormConv2D(filters, kernel, strides=strides, padding="same", use_bias=False)

    inputs = keras.Input(shape=(None, None, 3), name="hr")
    x0 = _leaky_relu()(layers.Conv2D(c, 3, padding="same")(inputs))
    x1 = _leaky_relu()(sn_conv(c * 2, 4, 2)(x0))
    x2 = _leaky_relu()(sn_conv(c * 4, 4, 2)(x1))
    x3 = _leaky_relu()(sn_conv(c * 8, 4, 2)(x2))
    x = x3
    for skip, filters in ((x2, c * 4), (x1, c * 2), (x0, c)):
        x = ResizeLike()([x, skip])
        x = layers.Add()([_leaky_relu()(sn_conv(filters, 3)(x)), skip])
    x = _leaky_relu()(sn_conv(c, 3)(x))
    x = _leaky_relu()(sn_conv(c, 3)(x))
    outputs = layers.Conv2D(1, 3, padding="same", dtype="float32")(x)
    return keras.Model(inputs, outputs, name=name)


def srgan_discriminator(hr_patch_size=96, base_channels=64, name="srgan_discriminator"):
    """The paper's VGG-style discriminator: 8 convs 64->512 (stride 1/2), dense 1024, dense 1.

    The input size is fixed (the dense head flattens the last feature map).
    """
    if hr_patch_size % 16:
        raise ValueError(f"hr_patch_size must be a multiple of 16, got {hr_patch_size}.")
    inputs = keras.Input(shape=(hr_patch_size, hr_patch_size, 3), name="hr")
    x = layers.Conv2D(base_channels, 3, padding="same")(inputs)
    x = layers.LeakyReLU(0.2)(x)
    for i in range(7):
        filters = base_channels * 2 ** ((i + 1) // 2)
        strides = 2 if i % 2 == 0 else 1
        x = layers.Conv2D(filters, 3, strides=strides, padding="same", use_bias=False)(x)
        x = _batch_norm()(x)
        x = layers.LeakyReLU(0.2)(x)
    x = layers.Flatten()(x)
    x = layers.Dense(1024)(x)
    x = layers.LeakyReLU(0.2)(x)
    outputs = layers.Dense(1, dtype="float32")(x)
    return keras.Model(inputs, outputs, name=name)
