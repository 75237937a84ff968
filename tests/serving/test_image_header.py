"""Image sizes read from encoded headers (the pixel limit is checked before decoding)."""

import io
import struct
import zlib

import pytest
import tensorflow as tf
from PIL import Image

from serving import contract, image_header
from tests.fixtures import make_image


@pytest.mark.parametrize(
    "image_format,mode,options",
    [
        ("PNG", "RGB", {}),
        ("PNG", "L", {}),
        ("PNG", "I;16", {}),
        ("JPEG", "RGB", {}),
        ("GIF", "P", {}),
        ("BMP", "RGB", {}),
        ("BMP", "RGBA", {}),
        ("WEBP", "RGB", {"lossless": True}),
        ("WEBP", "RGB", {"quality": 80}),
        ("WEBP", "RGBA", {"quality": 80}),  # Alpha: an extended (VP8X) file.
    ],
)
def test_declared_pixels_match_the_image_size(image_format, mode, options):
    buffer = io.BytesIO()
    Image.fromarray(make_image(23, 37)).convert(mode).save(buffer, format=image_format, **options)
    assert image_header.declared_pixels(tf.constant(buffer.getvalue())).numpy() == 23 * 37


def test_format_is_classified_like_decode_image():
    assert image_header.image_format(tf.constant(b"RIFF\0\0\0\0WEBPVP8L")).numpy() == (
        image_header.WEBP
    )
    assert image_header.image_format(tf.constant(b"RIFF\0\0\0\0WEBP")).numpy() == (
        image_header.UNKNOWN  # decode_image needs more than 12 bytes for WebP.
    )
    assert image_header.image_format(tf.constant(b"\xff\x0a")).numpy() == image_header.UNKNOWN


@pytest.mark.parametrize(
    "data,message",
    [
        (b"hello, not an image", "Unsupported image format: send PNG, JPEG, GIF, BMP or WebP"),
        (b"\x89PNG\r\n\x1a\n", "Not an image, or truncated: 8 bytes are too few for a PNG header"),
        (b"short", "Not an image, or truncated: 5 bytes are too few for an image header"),
        (b"RIFF\0\0\0\0WEBPVP8 \0\0\0\0\0\0\0\0\0", "too few bytes for a WebP header"),
        (b"RIFF\0\0\0\0WEBPALPH" + bytes(20), "first chunk is not VP8, VP8L or VP8X"),
        (b"GIF89a\x01\x00\x01\x00\x00\x00\x00\x3b", "Invalid GIF: a block before the end"),
    ],
)
def test_unknown_short_or_invalid_data_is_refused(data, message):
    with pytest.raises(tf.errors.InvalidArgumentError, match=message):
        image_header.declared_pixels(tf.constant(data))


def _png_bomb(width, height):
    """A 60-byte PNG whose header declares width x height (the pixel data is missing)."""
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    chunk = struct.pack(">I", len(ihdr)) + b"IHDR" + ihdr
    return b"\x89PNG\r\n\x1a\n" + chunk + struct.pack(">I", zlib.crc32(chunk[4:]))


def test_declared_png_size_does_not_overflow():
    assert image_header.declared_pixels(tf.constant(_png_bomb(2**32 - 1, 2**32 - 1))) == 2**62


def test_huge_declared_png_is_rejected_before_decoding(loaded):
    with pytest.raises(tf.errors.InvalidArgumentError, match="pixel limit"):
        loaded.signatures[contract.BYTES_SIGNATURE](
            image_bytes=tf.constant([_png_bomb(100_000, 100_000)])
        )


def _gif_with_comment(sub_blocks):
    """An 8x8 one-image GIF after a comment of `sub_blocks` one-byte sub-blocks."""
    comment = b"\x21\xfe" + b"\x01A" * sub_blocks + b"\x00"
    image = b"\x2c\0\0\0\0\x08\x00\x08\x00\x00\x02\x02\x44\x01\x00"
    return b"GIF89a\x08\x00\x08\x00\x00\x00\x00" + comment + image + b"\x3b"


def test_gif_walk_is_bounded_by_the_pixel_limit():
    limit = 100 * 100
    steps = image_header.gif_max_steps(limit)
    pixels = tf.function(lambda data: image_header.declared_pixels(data, limit))  # A graph loop.
    assert pixels(tf.constant(_gif_with_comment(steps - 10))).numpy() == 8 * 8
    with pytest.raises(tf.errors.InvalidArgumentError, match="GIF not supported: its first image"):
        pixels(tf.constant(_gif_with_comment(steps)))
