"""Aligned LR/HR patch sampling and augmentation: pure tensor functions for the input pipeline.

An LR patch at (y, x) of side p pairs with the HR patch at (y * scale, x * scale) of side
p * scale; every function here keeps that correspondence. Randomness is stateless (an explicit
[2] seed tensor per call), so a seeded pipeline is reproducible however tf.data schedules it.
"""

import tensorflow as tf


def _gather_patches(image, ys, xs, size):
    """Crops len(ys) size x size patches with top-left corners (ys, xs) in one gather each way.

    Args:
      image: [H, W, C].
      ys, xs: int32 [K] top-left corners.
      size: patch side.

    Returns:
      [K, size, size, C].
    """
    offsets = tf.range(size, dtype=tf.int32)
    rows = tf.gather(image, ys[:, None] + offsets)  # [K, size, W, C]
    return tf.gather(rows, xs[:, None] + offsets, axis=2, batch_dims=1)


def random_aligned_crops(lr, hr, scale, lr_patch_size, count, seed):
    """`count` aligned crops from one pair, at independent random positions.

    Args:
      lr: [h, w, C] LR image.
      hr: [h * scale, w * scale, C] HR image.
      scale: HR side / LR side (Python int).
      lr_patch_size: LR patch side p (Python int); the HR patch side is p * scale.
      count: crops to take (Python int).
      seed: int [2] stateless seed.

    Returns:
      (lr_patches [count, p, p, C], hr_patches [count, p*scale, p*scale, C]).
    """
    shape = tf.shape(lr)
    y_seed, x_seed = tf.unstack(tf.random.experimental.stateless_split(seed, 2))
    ys = tf.random.stateless_uniform([count], y_seed, minval=0,
                                     maxval=shape[0] - lr_patch_size + 1, dtype=tf.int32)
    xs = tf.random.stateless_uniform([count], x_seed, minval=0,
                                     maxval=shape[1] - lr_patch_size + 1, dtype=tf.int32)
    lr_patches = _gather_patches(lr, ys, xs, lr_patch_size)
    hr_patches = _gather_patches(hr, ys * scale, xs * scale, lr_patch_size * scale)
    return lr_patches, hr_patches


def _where_each(mask, transformed, patches):
    return tf.where(mask[:, None, None, None], transformed, patches)


def random_dihedral(lr_patches, hr_patches, seed):
    """Random flips and 90-degree rotations (the 8 symmetries of a square), one per patch pair.

    A transpose, a left-right flip and an up-down flip, each on or off, compose to all eight;
    the same choice is applied to the LR and HR patch of a pair, so they stay aligned.

    Args:
      lr_patches: [K, p, p, C].
      hr_patches: [K, P, P, C].
      seed: int [2] stateless seed.

    Returns:
      The transformed (lr_patches, hr_patches), same shapes.
    """
    count = tf.shape(lr_patches)[0]
    choices = tf.random.stateless_uniform([3, count], seed, minval=0, maxval=2, dtype=tf.int32)
    transpose, flip_lr, flip_ud = tf.unstack(tf.cast(choices, tf.bool))
    outputs = []
    for patches in (lr_patches, hr_patches):
        patches = _where_each(transpose, tf.transpose(patches, [0, 2, 1, 3]), patches)
        patches = _where_each(flip_lr, tf.reverse(patches, [2]), patches)
        patches = _where_each(flip_ud, tf.reverse(patches, [1]), patches)
        outputs.append(patches)
    return tuple(outputs)


def centre_crop(lr, hr, scale, hr_crop_size):
    """The aligned centre crop: HR hr_crop_size square, LR hr_crop_size // scale square.

    The LR offset is rounded down and the HR offset is scale times it, so the crops match
    exactly even when the centre falls between LR pixels.
    """
    lr_size = hr_crop_size // scale
    shape = tf.shape(lr)
    top = (shape[0] - lr_size) // 2
    left = (shape[1] - lr_size) // 2
    lr_crop = lr[top:top + lr_size, left:left + lr_size]
    hr_crop = hr[top * scale:(top + lr_size) * scale, left * scale:(left + lr_size) * scale]
    return lr_crop, hr_crop
