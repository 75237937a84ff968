"""SRResNet generator and SRGAN discriminator (Ledig et al. 2017), as Keras 3 builder functions.

Value ranges follow trainer.value_range: the generator takes LR in [0, 1] and returns HR in
[-1, 1] (linear output, clipped only when converted to uint8); the discriminator takes HR-range
images and returns one logit per image.
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


def _prelu():
    return layers.PReLU(shared_axes=[1, 2])


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
