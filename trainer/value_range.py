"""The one place that owns value ranges (the SRGAN paper's convention).

  LR images enter the generator in [0, 1].
  HR images, generator outputs and discriminator inputs are in [-1, 1].
  Files, PNGs and serving tensors are uint8 in [0, 255].
  The degradation model works in [0, 1] on HR and LR alike: the HR-only stream
  (input_pipeline.make_hr_train_dataset) yields HR patches in [0, 1]; after the LR is
  synthesised from them, hr_from_unit turns them into HR targets.

The input pipeline, the trainer, the evaluator and the serving export all convert through
these functions, so the convention cannot drift between training and inference.
"""

import tensorflow as tf


def unit_from_uint8(images):
    """uint8 [0, 255] -> float32 [0, 1] (the LR range and the degradation model's range)."""
    return tf.cast(images, tf.float32) / 255.0


def lr_from_uint8(images):
    """uint8 [0, 255] -> float32 LR range [0, 1]."""
    return unit_from_uint8(images)


def hr_from_unit(images):
    """[0, 1] (any float dtype) -> float32 HR range [-1, 1], not clipped (a sharpened target may
    overshoot, as a stored HR converted by hr_from_uint8 never does)."""
    return tf.cast(images, tf.float32) * 2.0 - 1.0


def unit_from_hr(images):
    """HR range [-1, 1] -> [0, 1] (the degradation model's range), not clipped."""
    return (tf.cast(images, tf.float32) + 1.0) / 2.0


def hr_from_uint8(images):
    """uint8 [0, 255] -> float32 HR range [-1, 1]."""
    return tf.cast(images, tf.float32) / 127.5 - 1.0


def hr_to_uint8(images):
    """HR range [-1, 1] (any float dtype) -> uint8, rounded and clipped."""
    images = (tf.cast(images, tf.float32) + 1.0) * 127.5
    return tf.cast(tf.clip_by_value(tf.round(images), 0.0, 255.0), tf.uint8)


def generate_uint8(generator, lr_uint8):
    """uint8 LR [N, h, w, 3] -> the generator's uint8 SR [N, h*s, w*s, 3] (inference mode).

    The one uint8 -> uint8 wrapper of a generator: evaluation, validation and the serving export
    all run a generator through it.
    """
    return hr_to_uint8(generator(lr_from_uint8(lr_uint8), training=False))
