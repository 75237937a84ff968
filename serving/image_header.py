"""Image size from the encoded header, in the graph, so that the pixel limit holds before decoding.

A small PNG can declare a huge canvas (a "decompression bomb"); checking the size only after
tf.io.decode_image would allocate it first. PNG, JPEG, GIF and BMP headers carry the size at
fixed places; other inputs report 0 pixels here and are checked after decoding.
"""

import tensorflow as tf


def _bytes_at(data, offset, length):
    return tf.cast(tf.io.decode_raw(tf.strings.substr(data, offset, length), tf.uint8), tf.int64)


def _big_endian(data, offset, length):
    values = _bytes_at(data, offset, length)
    return tf.reduce_sum(values * 256 ** tf.range(length - 1, -1, -1, dtype=tf.int64))


def _little_endian(data, offset, length):
    values = _bytes_at(data, offset, length)
    return tf.reduce_sum(values * 256 ** tf.range(length, dtype=tf.int64))


def _signed32(value):
    return tf.where(value >= 2**31, value - 2**32, value)


def _png_pixels(data):
    return _big_endian(data, 16, 4) * _big_endian(data, 20, 4)  # IHDR width, height.


def _gif_pixels(data):
    return _little_endian(data, 6, 2) * _little_endian(data, 8, 2)  # Logical screen size.


def _bmp_pixels(data):
    width = tf.abs(_signed32(_little_endian(data, 18, 4)))
    height = tf.abs(_signed32(_little_endian(data, 22, 4)))  # Negative: a top-down bitmap.
    return width * height


def _jpeg_pixels(data):
    shape = tf.cast(tf.image.extract_jpeg_shape(data), tf.int64)
    return shape[0] * shape[1]


def declared_pixels(data):
    """Width * height declared by a scalar string's image header (int64), 0 if unknown."""
    long_enough = tf.strings.length(data) >= 26

    def when(prefix):
        return tf.logical_and(
            long_enough, tf.equal(tf.strings.substr(data, 0, len(prefix)), prefix)
        )

    return tf.case(
        [
            (when(b"\x89PNG\r\n\x1a\n"), lambda: _png_pixels(data)),
            (when(b"\xff\xd8\xff"), lambda: _jpeg_pixels(data)),
            (when(b"GIF8"), lambda: _gif_pixels(data)),
            (when(b"BM"), lambda: _bmp_pixels(data)),
        ],
        default=lambda: tf.constant(0, tf.int64),
        exclusive=False,
    )
