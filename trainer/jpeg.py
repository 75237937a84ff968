"""Baseline JPEG compression and decompression as plain, batched TensorFlow ops.

Real-ESRGAN compresses every synthesised LR image with its own random JPEG quality.
`tf.image.adjust_jpeg_quality` runs libjpeg on the CPU, one image at a time, with one scalar
quality, so it cannot run on a replica's device inside the training step. `compress` does the
same round trip with tensor ops only (gathers, einsums, elementwise maths): it runs on any
device, inside `tf.function` with an unknown batch size, and under XLA, with a quality per image.

It follows the baseline path of libjpeg(-turbo) as PIL drives it (`Image.save(..., "JPEG",
quality=q)` then `Image.open`), step by step:

  Exact (same maths as libjpeg, in float instead of fixed point):
  - RGB -> YCbCr with the JFIF full-range constants (jccolor.c / jdcolor.c).
  - 4:2:0 chroma: 2x2 box average (jcsample.c h2v2_downsample), after libjpeg's edge
    replication: columns are replicated at full resolution to whole 16-pixel MCUs, rows to an
    even count, then the last chroma row is replicated to whole 8-row blocks (jcprepct.c).
  - Luma replicated to whole 8x8 blocks; the padding is cropped after decoding, as a decoder does.
  - Level shift by -128, 8x8 DCT-II (orthonormal, which is exactly JPEG's normalisation),
    quantisation with the IJG (Annex K) tables scaled the libjpeg way (jcparam.c: quality q
    rounded to an integer, scale 5000 // q below 50 else 200 - 2q, (t * scale + 50) // 100
    clipped to [1, 255] as with force_baseline), rounding, dequantisation, inverse DCT.
  - Decoder range limiting: Y, Cb and Cr clipped to [0, 255] after the inverse DCT.
  - "Fancy" (triangular) chroma upsampling, libjpeg's default (jdsample.c
    h2v2_fancy_upsample): weights 3/4 and 1/4 in each direction, edge samples replicated.
  - YCbCr -> RGB, clipped.
  Not modelled, because they change nothing or are lossless:
  - Huffman entropy coding (lossless) and dummy blocks beyond the MCU edge (never displayed).
  Differs (each below one 8-bit level per pixel, far smaller than quantisation):
  - libjpeg rounds to 8-bit integers after the colour conversion, the downsampling, the
    inverse DCT and the upsampling, and its integer DCTs (ISLOW) are accurate to about one
    level. Here everything stays float32 (so float inputs are not forced onto the 1/255 grid,
    and the output is not rounded either: the caller decides).
  - Coefficients are rounded half to even (tf.round); libjpeg rounds half away from zero. Ties
    need an exact x.5 coefficient, which float inputs essentially never produce.
Measured against PIL on Set14 crops: see tests/trainer/test_jpeg.py and the README.
"""

import numpy as np
import tensorflow as tf

# IJG / JPEG Annex K example tables, natural (row = vertical frequency) order, as in jcparam.c.
_LUMA_TABLE = np.array(
    [
        [16, 11, 10, 16, 24, 40, 51, 61],
        [12, 12, 14, 19, 26, 58, 60, 55],
        [14, 13, 16, 24, 40, 57, 69, 56],
        [14, 17, 22, 29, 51, 87, 80, 62],
        [18, 22, 37, 56, 68, 109, 103, 77],
        [24, 35, 55, 64, 81, 104, 113, 92],
        [49, 64, 78, 87, 103, 121, 120, 101],
        [72, 92, 95, 98, 112, 100, 103, 99],
    ],
    np.int32,
)
_CHROMA_TABLE = np.full((8, 8), 99, np.int32)
_CHROMA_TABLE[:4, :4] = [
    [17, 18, 24, 47],
    [18, 21, 26, 66],
    [24, 26, 56, 99],
    [47, 66, 99, 99],
]

# JFIF full-range colour conversion (ITU-R BT.601 weights), the constants libjpeg and PIL use.
_RGB_TO_YCBCR = np.array(
    [
        [0.299, 0.587, 0.114],
        [-0.168735892, -0.331264108, 0.5],
        [0.5, -0.418687589, -0.081312411],
    ],
    np.float32,
)
_YCBCR_TO_RGB = np.array(
    [
        [1.0, 0.0, 1.402],
        [1.0, -0.344136286, -0.714136286],
        [1.0, 1.772, 0.0],
    ],
    np.float32,
)


def _dct_matrix():
    """The orthonormal 8-point DCT-II matrix D[u, x]: coefficients = D @ block @ D^T."""
    u = np.arange(8)[:, None]
    x = np.arange(8)[None, :]
    matrix = np.cos((2 * x + 1) * u * np.pi / 16) * np.sqrt(2 / 8)
    matrix[0] /= np.sqrt(2)
    return matrix.astype(np.float32)


_DCT = _dct_matrix()


def quantisation_tables(quality):
    """float32 [B, 2, 8, 8] luma and chroma tables for integer-rounded qualities [B].

    libjpeg's jpeg_set_quality with force_baseline, computed with tensor ops so every image in
    a batch gets its own tables.
    """
    q = tf.cast(tf.clip_by_value(tf.floor(quality + 0.5), 1.0, 100.0), tf.int32)
    scale = tf.where(q < 50, 5000 // q, 200 - 2 * q)[:, None, None, None]
    base = tf.constant(np.stack([_LUMA_TABLE, _CHROMA_TABLE]))[None]
    return tf.cast(tf.clip_by_value((base * scale + 50) // 100, 1, 255), tf.float32)


def _round_up(n, multiple):
    return (n + multiple - 1) // multiple * multiple


def _pad_edge(x, axis, size):
    """x extended along axis to size by repeating its last row or column, as libjpeg pads.

    A concat of one repeated slice: cheaper than a gather of the whole tensor on CPU, and it
    works for dynamic sizes and under XLA.
    """
    last = tf.gather(x, [tf.shape(x)[axis] - 1], axis=axis)
    return tf.concat([x, tf.repeat(last, size - tf.shape(x)[axis], axis=axis)], axis=axis)


def _block_round_trip(planes, tables):
    """Level-shifted [N, H, W] samples (H, W multiples of 8) through DCT, quantisation, IDCT.

    tables: [N, 8, 8], one per plane. The 2-D DCT is D @ block @ D^T done as two matmuls over
    free reshapes (rows of 8 along the width, then a broadcast D over 8-row strips), so no
    pixel is transposed; the coefficients are then viewed as [N, row, u, col, v].
    """
    shape = tf.shape(planes)
    dct = tf.constant(_DCT)
    columns = tf.matmul(tf.reshape(planes, [-1, 8]), dct, transpose_b=True)
    coefficients = tf.matmul(dct, tf.reshape(columns, [-1, 8, shape[2]]))
    coefficients = tf.reshape(coefficients, [shape[0], shape[1] // 8, 8, shape[2] // 8, 8])
    step = tables[:, None, :, None, :]
    quantised = tf.reshape(tf.round(coefficients / step) * step, [-1, 8, shape[2]])
    rows = tf.matmul(dct, quantised, transpose_a=True)
    restored = tf.matmul(tf.reshape(rows, [-1, 8]), dct)
    return tf.reshape(restored, shape)


def _alternating(length, even, odd):
    """float32 [length]: even, odd, even, ... (libjpeg's alternating rounding biases)."""
    return tf.where(tf.range(length) % 2 == 0, even, odd)


def _box_downsample(planes):
    """[B, 2H, 2W, C] 8-bit samples -> [B, H, W, C] 2x2 means, rounded as h2v2_downsample does.

    libjpeg adds a bias alternating 1, 2 along the row before dividing the sum by 4, so ties
    round down in even and up in odd output columns (exact in float: the mean is k/4).
    """
    means = tf.nn.avg_pool2d(planes, ksize=2, strides=2, padding="VALID")
    return tf.floor(means + _alternating(tf.shape(means)[2], 0.25, 0.5)[:, None])


def _upsampling_kernel():
    """[3, 3, 1, 4] conv kernel: the four output phases of libjpeg's triangular upsampler.

    Output (2i + a, 2j + b) = sum of (1, 3) or (3, 1) weights over rows i-1..i+1 times the
    same over columns j-1..j+1: 16 x the h2v2_fancy_upsample value before rounding.
    """
    taps = np.array([[1, 3, 0], [0, 3, 1]], np.float32)  # phase 0 reads i-1, phase 1 i+1
    kernel = np.einsum("ay,bx->yxab", taps, taps).reshape(3, 3, 1, 4)
    return kernel


def _fancy_upsample(planes):
    """[N, H, W] 8-bit chroma -> [N, 2H, 2W]: libjpeg's h2v2_fancy_upsample, bit-exact.

    One 3x3 conv computes the four phases (edge samples replicated by a symmetric pad of 1),
    depth_to_space interleaves them; the sums of 16ths are rounded with libjpeg's biases (+8 in
    even, +7 in odd output columns).
    """
    padded = tf.pad(planes[..., None], [[0, 0], [1, 1], [1, 1], [0, 0]], mode="SYMMETRIC")
    phases = tf.nn.conv2d(padded, tf.constant(_upsampling_kernel()), 1, "VALID")
    phases = tf.floor((phases + tf.constant([8.0, 7.0, 8.0, 7.0])) / 16.0)
    return tf.nn.depth_to_space(phases, 2)[..., 0]


def _check_inputs(images, quality):
    """float32 [B, H, W, 3] images and a float32 [B] quality, or a clear error."""
    images = tf.convert_to_tensor(images)
    if images.dtype != tf.float32:
        raise TypeError(f"images must be float32 in [0, 1], got {images.dtype.name}")
    if images.shape.rank != 4 or images.shape[-1] != 3:
        raise ValueError(f"images must be [batch, height, width, 3], got shape {images.shape}")
    quality = tf.cast(tf.convert_to_tensor(quality), tf.float32)
    if quality.shape.rank not in (0, 1):
        raise ValueError(f"quality must be a scalar or [batch], got shape {quality.shape}")
    checks = [
        tf.debugging.assert_greater_equal(quality, 1.0, message="JPEG quality must be >= 1"),
        tf.debugging.assert_less_equal(quality, 100.0, message="JPEG quality must be <= 100"),
    ]
    with tf.control_dependencies(checks):
        quality = tf.broadcast_to(quality, tf.shape(images)[:1])
    return images, quality


def compress(images, quality):
    """JPEG-compresses and decodes a batch, each image at its own quality (4:2:0, IJG tables).

    Args:
      images: float32 [B, H, W, 3] in [0, 1], any H and W.
      quality: float32 [B] (or a scalar for all) in [1, 100]; rounded to an integer as libjpeg
        takes one.

    Returns:
      float32 [B, H, W, 3] in [0, 1], the decoded images (clipped, not rounded to 1/255).
    """
    images, quality = _check_inputs(images, quality)
    shape = tf.shape(images)
    batch, height, width = shape[0], shape[1], shape[2]
    # libjpeg stores 8-bit samples after each stage: rounding where it does keeps the result
    # within ~0.05 dB of PIL (float samples throughout: up to 0.9 dB at quality 95).
    ycc = tf.matmul(images * 255.0, tf.constant(_RGB_TO_YCBCR), transpose_b=True)
    ycc = tf.floor(ycc + tf.constant([0.5, 128.5, 128.5]))
    tables = quantisation_tables(quality)

    luma = _pad_edge(_pad_edge(ycc[..., 0], 1, _round_up(height, 8)), 2, _round_up(width, 8))
    luma = _block_round_trip(luma - 128.0, tables[:, 0]) + 128.0

    # Chroma: libjpeg's padding (module docstring), 2x2 means, [B * 2, h, w] planes of blocks.
    chroma_height, chroma_width = (height + 1) // 2, (width + 1) // 2
    chroma = _pad_edge(ycc[..., 1:], 1, 2 * chroma_height)
    chroma = _box_downsample(_pad_edge(chroma, 2, 2 * _round_up(chroma_width, 8)))
    chroma = _pad_edge(chroma, 1, _round_up(chroma_height, 8))
    chroma = tf.transpose(chroma, [0, 3, 1, 2])
    chroma = tf.reshape(chroma, [2 * batch, tf.shape(chroma)[2], tf.shape(chroma)[3]])
    chroma = _block_round_trip(chroma - 128.0, tf.repeat(tables[:, 1], 2, axis=0)) + 128.0

    # Decoder: range limit, crop to the real chroma size, upsample, crop to the image.
    luma = tf.clip_by_value(tf.round(luma[:, :height, :width]), 0.0, 255.0)
    chroma = tf.clip_by_value(tf.round(chroma[:, :chroma_height, :chroma_width]), 0.0, 255.0)
    chroma = _fancy_upsample(chroma)[:, :height, :width]
    chroma = tf.transpose(tf.reshape(chroma, [batch, 2, height, width]), [0, 2, 3, 1])
    ycc = tf.concat([luma[..., None], chroma - 128.0], axis=-1)
    rgb = tf.matmul(ycc, tf.constant(_YCBCR_TO_RGB), transpose_b=True)
    return tf.clip_by_value(rgb / 255.0, 0.0, 1.0)
