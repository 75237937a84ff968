"""Byte-level image files for the bad-input and conversion cases (no Beam, no TF)."""

import io
import struct
import zlib

import numpy as np
from PIL import Image

from tests import fixtures


def _chunk(kind, payload):
    body = kind + payload
    return struct.pack(">I", len(payload)) + body + struct.pack(">I", zlib.crc32(body))


def raw_png(pixels, bit_depth, colour_type):
    """A PNG written by hand (PIL cannot write 16-bit RGB): pixels [h, w, c] big-endian rows."""
    height, width = pixels.shape[:2]
    dtype = ">u2" if bit_depth == 16 else np.uint8
    rows = pixels.astype(dtype).reshape(height, -1).view(np.uint8).reshape(height, -1)
    raw = b"".join(b"\x00" + row.tobytes() for row in rows)
    header = struct.pack(">IIBBBBB", width, height, bit_depth, colour_type, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + _chunk(b"IHDR", header)
        + _chunk(b"IDAT", zlib.compress(raw))
        + _chunk(b"IEND", b"")
    )


def rgb16_png(pixels8):
    """16-bit RGB PNG whose high bytes are `pixels8` (low bytes arbitrary)."""
    wide = pixels8.astype(np.uint16) * 257
    return raw_png(wide, 16, 2)


def bomb_png(width=100_000, height=100_000):
    """A tiny PNG whose IHDR claims width x height 8-bit RGB pixels."""
    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + _chunk(b"IHDR", header)
        + _chunk(b"IDAT", zlib.compress(b"\x00" * 1024))
        + _chunk(b"IEND", b"")
    )


def truncated_png(pixels):
    data = fixtures.png_bytes(pixels)
    return data[: len(data) // 2]


def encoded(pixels, mode=None, fmt="PNG"):
    """`pixels` encoded via PIL after conversion to `mode` (L, P, RGBA, ...)."""
    image = Image.fromarray(pixels)
    if mode == "P":
        image = image.quantize(colors=64)
    elif mode:
        image = image.convert(mode)
    buffer = io.BytesIO()
    image.save(buffer, format=fmt)
    return buffer.getvalue()
