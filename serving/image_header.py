"""What an encoded image declares, read in the graph before anything is decoded.

A small file can declare a huge canvas (a "decompression bomb"): a 38-byte lossless WebP decodes
to 16383 x 16383 pixels, and a 1 MB GIF can hold hundreds of 1024 x 1024 frames, all of which
tf.io.decode_image decodes even when it keeps only the first (and sizes its output by the
largest). `inspect` reads the header of the
formats the serving signature accepts, refuses everything else (and short, truncated headers)
with an InvalidArgument error, and cuts a GIF after its first image, so that the pixel limit
bounds what decoding allocates. Everything here runs in the exported graph, so TF Serving gets
the same protection as the local server.

The format is classified the way tf.io.decode_image classifies it (TF 2.21, decode_image_op.cc:
JPEG, PNG, GIF, BMP by their first bytes, then RIFF....WEBP), so the header read here is the one
the decoder then reads. decode_image also accepts JPEG XL; it is refused here, like any format
whose header is not read.
"""

import functools
import typing

import tensorflow as tf

ACCEPTED = "PNG, JPEG, GIF, BMP or WebP"
UNKNOWN, JPEG, PNG, GIF, BMP, WEBP = range(6)
# decode_image's order of signatures (the first match wins).
_SIGNATURES = (
    (JPEG, b"\xff\xd8\xff"),
    (PNG, b"\x89PNG\r\n\x1a\n"),
    (GIF, b"GIF8"),
    (BMP, b"BM"),
)
_NAMES = {
    UNKNOWN: "an image",
    JPEG: "a JPEG",
    PNG: "a PNG",
    GIF: "a GIF",
    BMP: "a BMP",
    WEBP: "a WebP",
}
# Bytes needed to read the size: PNG IHDR, GIF logical screen, BMP info header, WebP VP8L header
# (VP8 and VP8X need 30, checked on their chunk); JPEG's size is found by extract_jpeg_shape.
# Fewer than 12 bytes of no known format are "not an image" rather than an unsupported format.
_HEADER_BYTES = {UNKNOWN: 12, JPEG: 4, PNG: 24, GIF: 13, BMP: 26, WEBP: 25}


class Header(typing.NamedTuple):
    """The result of `inspect`; both tensors wait for the header checks.

    Attributes:
      pixels: int64 width * height that decoding allocates for (for a GIF, the larger of its
        logical screen and its first image).
      contents: the bytes to decode: the input, or for a GIF its first image plus the trailer.
    """

    pixels: tf.Tensor
    contents: tf.Tensor


def _length(data):
    return tf.cast(tf.strings.length(data), tf.int64)


def _substr(data, offset, length):
    """Up to `length` bytes from `offset`; fewer, or none, past the end (never an error)."""
    offset = tf.minimum(tf.cast(offset, tf.int64), _length(data))
    return tf.strings.substr(data, offset, tf.constant(length, tf.int64))


def _bytes_at(data, offset, length):
    """`length` bytes from `offset` as int64; past the end reads zeros (lengths are checked)."""
    raw = tf.io.decode_raw(_substr(data, offset, length), tf.uint8)
    return tf.pad(tf.cast(raw, tf.int64), [[0, length - tf.shape(raw)[0]]])


def _big_endian(data, offset, length):
    values = _bytes_at(data, offset, length)
    return tf.reduce_sum(values * 256 ** tf.range(length - 1, -1, -1, dtype=tf.int64))


def _little_endian(data, offset, length):
    values = _bytes_at(data, offset, length)
    return tf.reduce_sum(values * 256 ** tf.range(length, dtype=tf.int64))


def _signed32(value):
    return tf.where(value >= 2**31, value - 2**32, value)


def _require(condition, message):
    """An op that fails with InvalidArgument(message) unless the scalar `condition` holds."""
    return tf.debugging.Assert(condition, [message])


def _checked(checks, pixels, contents):
    with tf.control_dependencies(checks):
        return tf.identity(pixels), tf.identity(contents)


def _starts_with(data, prefix):
    return tf.equal(tf.strings.substr(data, 0, len(prefix)), prefix)


def image_format(data):
    """The format tf.io.decode_image would decode a scalar string as (int32, UNKNOWN if none)."""
    is_webp = tf.logical_and(
        tf.logical_and(_starts_with(data, b"RIFF"), tf.strings.length(data) > 12),
        tf.equal(_substr(data, 8, 4), b"WEBP"),
    )
    cases = [(_starts_with(data, prefix), lambda f=f: tf.constant(f)) for f, prefix in _SIGNATURES]
    cases.append((is_webp, lambda: tf.constant(WEBP)))
    return tf.case(cases, default=lambda: tf.constant(UNKNOWN), exclusive=False)


def _png(data):
    # IHDR width, height: 32 bits each, clamped so that their product cannot overflow int64.
    width = tf.minimum(_big_endian(data, 16, 4), 2**31)
    return width * tf.minimum(_big_endian(data, 20, 4), 2**31), data


def _jpeg(data):
    shape = tf.cast(tf.image.extract_jpeg_shape(data), tf.int64)
    return shape[0] * shape[1], data


def _bmp(data):
    width = tf.abs(_signed32(_little_endian(data, 18, 4)))
    height = tf.abs(_signed32(_little_endian(data, 22, 4)))  # Negative: a top-down bitmap.
    return width * height, data


def _webp(data):
    """Canvas size of a lossy (VP8), lossless (VP8L) or extended (VP8X) WebP.

    An animated WebP is refused: decode_image only decodes it to RGBA, and in TF 2.21 one without
    alpha overruns its output buffer (heap corruption) when decoded with channels=0.
    """
    chunk = _substr(data, 12, 4)
    length = tf.strings.length(data)
    # VP8: frame tag (3 bytes), start code 9d 01 2a, 14-bit width and height (2 scale bits).
    lossy = tf.equal(chunk, b"VP8 ")
    lossy_pixels = (_little_endian(data, 26, 2) % 2**14) * (_little_endian(data, 28, 2) % 2**14)
    # VP8L: signature 0x2f, then width - 1 and height - 1 in 14 bits each.
    lossless = tf.equal(chunk, b"VP8L")
    bits = _little_endian(data, 21, 4)
    lossless_pixels = (bits % 2**14 + 1) * (bits // 2**14 % 2**14 + 1)
    # VP8X: flags (0x02: animation), 3 reserved bytes, canvas width - 1 and height - 1 (24 bits).
    extended = tf.equal(chunk, b"VP8X")
    extended_pixels = (_little_endian(data, 24, 3) + 1) * (_little_endian(data, 27, 3) + 1)
    animated = tf.logical_and(extended, _bytes_at(data, 20, 1)[0] // 2 % 2 == 1)
    checks = [
        _require(
            tf.reduce_any([lossy, lossless, extended]),
            "Invalid WebP: its first chunk is not VP8, VP8L or VP8X.",
        ),
        _require(
            tf.logical_or(lossless, length >= 30),
            "Truncated image: too few bytes for a WebP header.",
        ),
        _require(
            tf.logical_not(animated),
            "Animated WebP is not supported: send its first frame as a still image.",
        ),
    ]
    pixels = tf.where(lossy, lossy_pixels, tf.where(lossless, lossless_pixels, extended_pixels))
    return _checked(checks, pixels, data)


def _gif_table_bytes(flags):
    """Bytes of a global or local colour table from its descriptor's flags byte."""
    return tf.where(flags >= 128, 3 * 2 ** (flags % 8 + 1), tf.zeros_like(flags))


# States of the walk through a GIF's blocks.
_BLOCK, _EXTENSION_DATA, _IMAGE_DATA, _DONE, _INVALID = range(5)


def gif_max_steps(max_pixels):
    """Walk steps allowed to reach the end of a GIF's first image (see `_gif`).

    LZW codes are at most 12 bits and each gives at least one pixel, so a first image within
    `max_pixels` holds at most 1.5 bytes a pixel, in sub-blocks of 255 bytes as encoders write
    them; 1024 more steps cover the extensions before it. Each step costs some microseconds, so
    a file of tiny sub-blocks costs no more than decoding an image of `max_pixels` would.
    """
    return int(max_pixels * 1.5 / 255) + 1024


def _gif_step(values, position, state, image_pixels):
    """One step of the block walk: a block's introducer, or one data sub-block."""
    last = tf.size(values) - 1
    head = tf.gather(values, tf.minimum(position + tf.range(10), last))  # Past the end: checked.
    introducer = size = head[0]
    in_block = tf.equal(state, _BLOCK)
    # 0x21 extension: introducer, label, sub-blocks. 0x2C image: 10-byte descriptor, local colour
    # table, LZW minimum code size byte, sub-blocks. Anything else (even the 0x3B trailer) before
    # the first image ends is invalid.
    is_extension = tf.logical_and(in_block, tf.equal(introducer, 0x21))
    is_image = tf.logical_and(in_block, tf.equal(introducer, 0x2C))
    image_start = position + 10 + _gif_table_bytes(head[9]) + 1
    # A zero-length sub-block ends the data: an extension returns to blocks, the image ends.
    data_ends = tf.logical_and(tf.logical_not(in_block), tf.equal(size, 0))
    next_position = tf.where(
        is_extension,
        position + 2,
        tf.where(is_image, image_start, position + 1 + size),
    )
    after_data = tf.where(tf.equal(state, _IMAGE_DATA), _DONE, _BLOCK)
    next_state = tf.where(
        in_block,
        tf.where(is_extension, _EXTENSION_DATA, tf.where(is_image, _IMAGE_DATA, _INVALID)),
        tf.where(data_ends, after_data, state),
    )
    width = tf.cast(head[5] + 256 * head[6], tf.int64)
    height = tf.cast(head[7] + 256 * head[8], tf.int64)
    return next_position, next_state, tf.where(is_image, width * height, image_pixels)


def _gif(data, max_pixels):
    """The larger of the logical screen and the first image, and the GIF cut after that image.

    decode_image(expand_animations=False) decodes every frame (giflib's DGifSlurp) and keeps the
    first, and sizes its output by the largest frame, not the logical screen. Walking the blocks
    to the end of the first image and appending the trailer (0x3B) leaves one frame to decode.
    """
    values = tf.cast(tf.io.decode_raw(data, tf.uint8), tf.int32)
    length = tf.size(values)
    screen_pixels = _little_endian(data, 6, 2) * _little_endian(data, 8, 2)
    start = 13 + _gif_table_bytes(values[10])

    def more(position, state, image_pixels):
        return tf.logical_and(state < _DONE, position < length)

    def step(position, state, image_pixels):
        return _gif_step(values, position, state, image_pixels)

    end, state, image_pixels = tf.while_loop(
        more,
        step,
        (start, tf.constant(_BLOCK), tf.constant(0, tf.int64)),
        maximum_iterations=gif_max_steps(max_pixels),
    )
    problem = tf.where(
        tf.equal(state, _INVALID),
        "Invalid GIF: a block before the end of its first image is neither an extension nor an "
        "image.",
        tf.where(
            end >= length,
            "Truncated image: the GIF ends before its first image does.",
            f"GIF not supported: its first image takes more than {gif_max_steps(max_pixels)} "
            f"blocks, which no image within max_input_pixels={max_pixels} needs. Re-encode it.",
        ),
    )
    check = _require(tf.equal(state, _DONE), problem)
    first_image = tf.strings.join([tf.strings.substr(data, 0, end), b"\x3b"])
    return _checked([check], tf.maximum(screen_pixels, image_pixels), first_image)


def _unknown(data):
    return tf.constant(0, tf.int64), data  # Never used: the format check has failed.


def inspect(data, max_pixels):
    """Checks a scalar string's image header; returns its Header (see there).

    Fails with InvalidArgument for a format other than PNG, JPEG, GIF, BMP or WebP, a header cut
    short, an animated WebP, and a GIF whose blocks cannot be walked to the end of its first image
    in gif_max_steps(max_pixels) steps (`max_pixels`: the pixel limit the caller then checks).
    """
    image_format_ = image_format(data)
    length = tf.strings.length(data)
    minimum = tf.gather([_HEADER_BYTES[f] for f in range(UNKNOWN, WEBP + 1)], image_format_)
    name = tf.gather([_NAMES[f] for f in range(UNKNOWN, WEBP + 1)], image_format_)
    checks = [
        _require(
            tf.logical_or(tf.not_equal(image_format_, UNKNOWN), length < _HEADER_BYTES[UNKNOWN]),
            f"Unsupported image format: send {ACCEPTED} (other formats, JPEG XL included, are "
            f"refused before decoding).",
        ),
        _require(
            length >= minimum,
            tf.strings.join(
                [
                    "Not an image, or truncated: ",
                    tf.strings.as_string(length),
                    " bytes are too few for ",
                    name,
                    f" header (send {ACCEPTED}).",
                ]
            ),
        ),
    ]
    with tf.control_dependencies(checks):
        data = tf.identity(data)
    branches = [_unknown, _jpeg, _png, functools.partial(_gif, max_pixels=max_pixels), _bmp, _webp]
    pixels, contents = tf.switch_case(image_format_, [lambda b=b: b(data) for b in branches])
    return Header(pixels, contents)


def declared_pixels(data, max_pixels=2048 * 2048):
    """Width * height declared by a scalar string's image header (int64); see `inspect`."""
    return inspect(data, max_pixels).pixels
