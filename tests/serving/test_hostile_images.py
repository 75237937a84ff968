"""Hostile encoded images against the exported bytes signature (issue 14): refused or first frame.

The protection lives in the graph (serving.image_header), so these go through the exported
SavedModel in process, and the worst ones through the local server subprocess, whose peak
memory growth is measured.
"""

import base64
import io
import struct
import time

import numpy as np
import pytest
import tensorflow as tf
from PIL import Image, features

from serving import contract, image_header
from tests.fixtures import make_image, png_bytes, rest_json
from tests.serving.conftest import MODEL_NAME, SCALE, TILING

# The numbers: a 38-byte WebP declaring 16383 x 16383 (805 MB of RGB), and a GIF of
# 400 frames of 1024 x 1024 (about 1 MB) that decode_image decoded whole (+393 MiB).
WEBP_BOMB_SIDE = 16383
GIF_FRAMES = 400
GIF_FRAME_SIDE = 1024
PEAK_GROWTH_MIB = 300

pytestmark = pytest.mark.skipif(not features.check("webp"), reason="Pillow without WebP.")


def _encode(image, image_format, **options):
    buffer = io.BytesIO()
    image.save(buffer, format=image_format, **options)
    return buffer.getvalue()


def webp_bomb(width, height):
    """A 38-byte lossless WebP of one colour whose VP8L header declares width x height.

    With a single colour every Huffman code has one symbol and costs no bits, so the same tiny
    bitstream decodes to any size: only the 14-bit size fields are patched.
    """
    data = _encode(Image.new("RGB", (16, 16), (200, 10, 30)), "WEBP", lossless=True, exact=True)
    assert data[12:16] == b"VP8L" and data[20] == 0x2F
    bits = struct.unpack("<I", data[21:25])[0] & ~(2**28 - 1)
    bits |= (width - 1) | (height - 1) << 14
    return data[:21] + struct.pack("<I", bits) + data[25:]


def _gif_blocks(data):
    """(everything before the first block, the first image block) of a one-frame GIF."""
    position = 13 + (3 * 2 ** ((data[10] & 7) + 1) if data[10] & 0x80 else 0)
    head = data[:position]
    while data[position] == 0x21:  # Extensions: introducer, label, sub-blocks.
        position += 2
        while data[position]:
            position += 1 + data[position]
        position += 1
    start = position
    flags = data[position + 9]
    position += 10 + (3 * 2 ** ((flags & 7) + 1) if flags & 0x80 else 0) + 1
    while data[position]:
        position += 1 + data[position]
    return head, data[start : position + 1]


PALETTE = [v for i in range(256) for v in (i, (i * 7) % 256, 255 - i)]


def palette_frame(indices):
    """A P-mode image of uint8 palette indices, all frames sharing PALETTE."""
    image = Image.fromarray(np.asarray(indices, np.uint8), "P")
    image.putpalette(PALETTE)
    return image


def gif_with_frames(frames, repeat_last=1):
    """A GIF of P-mode frames (each full-frame, shared global palette), the last one repeated.

    Built from Pillow's one-frame GIFs, so that Pillow cannot merge or crop the frames; the
    logical screen is the first frame's size, whatever the later frames declare.
    """
    parts = [_gif_blocks(_encode(frame, "GIF", optimize=False)) for frame in frames]
    head = parts[0][0]
    blocks = [block for _, block in parts] + [parts[-1][1]] * (repeat_last - 1)
    return head + b"".join(blocks) + b"\x3b"


def many_frame_gif():
    """A small first frame (within the session limit), then 400 frames of 1024 x 1024."""
    first = palette_frame(make_image(40, 48, seed=5)[..., 0])
    later = palette_frame(np.full((GIF_FRAME_SIDE, GIF_FRAME_SIDE), 7, np.uint8))
    return gif_with_frames([first, later], repeat_last=GIF_FRAMES), first


def _serve(loaded, data):
    out = loaded.signatures[contract.BYTES_SIGNATURE](image_bytes=tf.constant([data]))
    return tf.io.decode_png(out[contract.BYTES_OUTPUT][0]).numpy()


def _rgb_png(image):
    return png_bytes(np.asarray(image.convert("RGB")))


def test_webp_bomb_is_refused_before_decoding(loaded):
    bomb = webp_bomb(WEBP_BOMB_SIDE, WEBP_BOMB_SIDE)
    assert len(bomb) < 40
    assert image_header.declared_pixels(tf.constant(bomb)).numpy() == WEBP_BOMB_SIDE**2
    with pytest.raises(tf.errors.InvalidArgumentError, match="pixel limit"):
        _serve(loaded, bomb)


@pytest.mark.parametrize(
    "blob",
    [
        b"\xff\x0a\xfa\x7f\xff\xff\x07\x08" + bytes(64),  # JPEG XL codestream (decode_image: yes).
        b"\x00\x00\x00\x0cJXL \r\n\x87\n" + bytes(64),  # JPEG XL container.
        b"II*\x00" + bytes(64),  # TIFF.
        b"RIFF\x10\x00\x00\x00WAVEfmt " + bytes(64),  # RIFF, but not WebP.
        b"hello, this is not an image at all",
    ],
    ids=["jxl", "jxl-container", "tiff", "riff-wave", "text"],
)
def test_unknown_formats_are_refused_before_decoding(loaded, blob):
    with pytest.raises(tf.errors.InvalidArgumentError, match="Unsupported image format: send PNG"):
        _serve(loaded, blob)


@pytest.mark.parametrize(
    "blob",
    [
        b"",
        b"\x89PNG",
        b"\x89PNG\r\n\x1a\n\x00\x00\x00\x0dIHDR",
        b"GIF89a\x01\x00",
        b"BM" + bytes(10),
        b"RIFF\x20\x00\x00\x00WEBPVP8L",
    ],
    ids=["empty", "png-magic", "png-no-size", "gif", "bmp", "webp"],
)
def test_truncated_headers_are_refused_before_decoding(loaded, blob):
    with pytest.raises(tf.errors.InvalidArgumentError, match="Not an image, or truncated"):
        _serve(loaded, blob)


def test_truncated_gif_is_refused_before_decoding(loaded):
    gif = gif_with_frames([palette_frame(make_image(20, 28)[..., 0])])
    with pytest.raises(tf.errors.InvalidArgumentError, match="GIF ends before its first image"):
        _serve(loaded, gif[: len(gif) // 2])


def test_gif_first_image_size_counts_not_only_the_screen(loaded):
    # An 8x8 logical screen whose first image declares 200x200: decode_image sizes its output
    # by the frame, so the frame's size is what the limit checks.
    big = gif_with_frames([palette_frame(np.zeros((200, 200), np.uint8))])
    gif = big[:6] + struct.pack("<HH", 8, 8) + big[10:]
    assert image_header.declared_pixels(tf.constant(gif)).numpy() == 200 * 200
    with pytest.raises(tf.errors.InvalidArgumentError, match="pixel limit"):
        _serve(loaded, gif)


def test_animated_webp_is_refused(loaded):
    frames = [Image.fromarray(np.full((20, 28, 3), c, np.uint8)) for c in (10, 250)]
    animated = _encode(frames[0], "WEBP", save_all=True, append_images=frames[1:], lossless=True)
    with pytest.raises(tf.errors.InvalidArgumentError, match="Animated WebP is not supported"):
        _serve(loaded, animated)


def test_webp_upscales_like_the_png_of_its_pixels(loaded):
    rgb = make_image(20, 28, seed=3)
    expected = _serve(loaded, png_bytes(rgb))
    lossless = _encode(Image.fromarray(rgb), "WEBP", lossless=True, exact=True)
    np.testing.assert_array_equal(_serve(loaded, lossless), expected)
    lossy = _encode(Image.fromarray(rgb), "WEBP", quality=90)
    decoded = np.asarray(Image.open(io.BytesIO(lossy)).convert("RGB"))
    difference = _serve(loaded, lossy).astype(int) - _serve(loaded, png_bytes(decoded))
    assert np.abs(difference).max() <= 8  # Pillow's and TF's libwebp may round differently.
    assert _serve(loaded, lossy).shape == (20 * SCALE, 28 * SCALE, 3)


def test_multi_frame_gif_upscales_its_first_frame(loaded):
    frames = [palette_frame(make_image(20, 28, seed=s)[..., 0]) for s in range(3)]
    gif = gif_with_frames(frames)
    assert Image.open(io.BytesIO(gif)).n_frames == 3
    np.testing.assert_array_equal(_serve(loaded, gif), _serve(loaded, _rgb_png(frames[0])))


def test_many_frame_gif_decodes_only_its_first_frame(loaded):
    gif, first = many_frame_gif()
    assert len(gif) < 2_000_000 and 40 * 48 <= TILING.max_input_pixels
    started = time.monotonic()
    upscaled = _serve(loaded, gif)
    seconds = time.monotonic() - started
    np.testing.assert_array_equal(upscaled, _serve(loaded, _rgb_png(first)))
    assert seconds < 5, f"{seconds:.1f} s: the later frames were decoded"


def _predict(server_process, data):
    body = {"instances": [{"b64": base64.b64encode(data).decode("ascii")}]}
    path = f"/v1/models/{MODEL_NAME}:predict"
    return rest_json(server_process.rest_address, path, body, timeout=120)


def test_server_refuses_the_webp_bomb_in_bounded_memory(server_process):
    server_process.peak.reset()
    status, reply = _predict(server_process, webp_bomb(WEBP_BOMB_SIDE, WEBP_BOMB_SIDE))
    assert status == 400 and "pixel limit" in reply["error"]
    assert server_process.peak.growth_mib() < PEAK_GROWTH_MIB


def test_server_upscales_the_first_frame_of_a_many_frame_gif_in_bounded_memory(server_process):
    gif, first = many_frame_gif()
    server_process.peak.reset()
    status, reply = _predict(server_process, gif)
    assert status == 200, reply
    assert server_process.peak.growth_mib() < PEAK_GROWTH_MIB
    (prediction,) = reply["predictions"]
    upscaled = np.asarray(Image.open(io.BytesIO(base64.b64decode(prediction["b64"]))))
    assert upscaled.shape == (40 * SCALE, 48 * SCALE, 3)
    assert _predict(server_process, _rgb_png(first))[1] == reply
