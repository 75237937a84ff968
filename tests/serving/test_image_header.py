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
    "image_format,mode",
    [("PNG", "RGB"), ("PNG", "L"), ("JPEG", "RGB"), ("GIF", "P"), ("BMP", "RGB"), ("BMP", "RGBA")],
)
def test_declared_pixels_match_the_image_size(image_format, mode):
    buffer = io.BytesIO()
    Image.fromarray(make_image(23, 37)).convert(mode).save(buffer, format=image_format)
    assert image_header.declared_pixels(tf.constant(buffer.getvalue())).numpy() == 23 * 37


def test_unknown_or_short_data_declares_nothing():
    assert image_header.declared_pixels(tf.constant(b"hello, not an image")).numpy() == 0
    assert image_header.declared_pixels(tf.constant(b"\x89PNG")).numpy() == 0


def _png_bomb(width, height):
    """A 60-byte PNG whose header declares width x height (the pixel data is missing)."""
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    chunk = struct.pack(">I", len(ihdr)) + b"IHDR" + ihdr
    return b"\x89PNG\r\n\x1a\n" + chunk + struct.pack(">I", zlib.crc32(chunk[4:]))


def test_huge_declared_png_is_rejected_before_decoding(loaded):
    with pytest.raises(tf.errors.InvalidArgumentError, match="pixel limit"):
        loaded.signatures[contract.BYTES_SIGNATURE](
            image_bytes=tf.constant([_png_bomb(100_000, 100_000)])
        )
