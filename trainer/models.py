"""SRResNet generator and SRGAN discriminator (Ledig et al. 2017), as Keras 3 builder functions.

Value ranges follow trainer.value_range: the generator takes LR in [0, 1] and returns HR in
[-1, 1] (linear output, clipped only when converted to uint8); the discriminator takes HR-range
images and returns one logit per image.
"""

import math

import keras
import tensorflow as tf
from keras import layers


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
        size = tf.shape(inputs)[1:3] * self.scale
        upscaled = tf.image.resize(inputs, size, method="bicubic")
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


def srresnet_generator(scale=4, num_blocks=16, channels=64, bicubic_skip=False, name="srresnet"):
    """SRResNet: 9x9 conv + PReLU, residual blocks, conv-BN + global skip, sub-pixel x2 stages.

    Args:
      scale: 2, 4 or 8 (one sub-pixel x2 stage per factor of 2).
      num_blocks: residual blocks (16 in the paper).
      channels: feature channels (64 in the paper).
      bicubic_skip: add the bicubic upscale of the input to the output, so the network learns
        only the residual (not in the paper; converges much faster on short CPU runs).
      name: model name.

    Returns:
      A fully convolutional keras.Model: [N, H, W, 3] in [0, 1] -> [N, H*s, W*s, 3] in [-1, 1].
    """
    stages = int(math.log2(scale))
    if scale < 2 or 2**stages != scale:
        raise ValueError(f"scale must be a power of 2 (2, 4, 8), got {scale}.")
    inputs = keras.Input(shape=(None, None, 3), name="lr")
    x = layers.Conv2D(channels, 9, padding="same")(inputs)
    x = head = _prelu()(x)
    for _ in range(num_blocks):
        x = _residual_block(x, channels)
    x = layers.Conv2D(channels, 3, padding="same")(x)
    x = _batch_norm()(x)
    x = layers.Add()([head, x])
    for _ in range(stages):
        x = layers.Conv2D(channels * 4, 3, padding="same")(x)
        x = SubpixelUpsample(2)(x)
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
