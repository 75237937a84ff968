"""Image decoding, validation and LR/HR pair preparation (plain Python, no Beam, no TensorFlow).

Every rejection raises an `ImageError` subclass whose message is the dead-letter reason, so a
bad file becomes one clear line in `rejected-*.jsonl` instead of a stack trace.

Rules:
  * Pixel count is checked from the header before any pixel is decoded (decompression bombs).
  * Only the formats of IMAGE_EXTENSIONS are decoded (PNG, JPEG, BMP, GIF, TIFF, WebP).
  * Images are normalised to 8-bit RGB: grayscale, palette, RGBA/LA (alpha dropped, not
    composited) and 16-bit images are converted (16-bit values scaled, not clipped), not
    rejected. `decode_rgb` (bytes) and `load_rgb` (a file) are this rule for every stage.
  * HR sides are mod-cropped (bottom/right) to a multiple of the scale; a given LR must then be
    exactly HR / scale; a missing LR is synthesised by an antialiased bicubic downscale (PIL),
    or, HR-only (PairConfig.hr_only), not stored at all: the HR records are the same as a paired
    job's, and the min-size rule applies to HR / scale, the LR the trainer synthesises.
  * Source bytes pass through unchanged when they already are an 8-bit RGB PNG of the final
    size, which saves a PNG encode per image.
"""

import dataclasses
import hashlib
import io
import struct
import warnings

import numpy as np
from PIL import Image

from data_prep import schema

DEFAULT_MAX_PIXELS = 64 * 2**20  # 67 megapixels, e.g. 8192 x 8192.
# PIL format -> file name endings: the formats the decode rule accepts. `decode_rgb` restricts
# PIL to these formats (PIL would also open EPS through Ghostscript, PSD, ICO, ... by content),
# so a file is an image for every stage exactly when its ending is in IMAGE_EXTENSIONS and
# its bytes decode as one of these formats. GIF and multi-page TIFF give their first frame.
_FORMATS = {
    "PNG": (".png",),
    "JPEG": (".jpg", ".jpeg"),
    "BMP": (".bmp",),
    "GIF": (".gif",),
    "TIFF": (".tif", ".tiff"),
    "WEBP": (".webp",),
}
# File name endings (lower case) of the images every stage reads: data prep's pairing,
# evaluation folders, the serving client's folders.
IMAGE_EXTENSIONS = tuple(ending for endings in _FORMATS.values() for ending in endings)
DEFAULT_MIN_LR_SIZE = 24  # the LR side of the paper's 96-pixel HR patch at x4.
_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
_PNG_TRUECOLOR = 2


class ImageError(ValueError):
    """An input that cannot become a training pair; the message is the dead-letter reason."""


class EmptyFileError(ImageError):
    pass


class NotAnImageError(ImageError):
    pass


class CorruptImageError(ImageError):
    pass


class ImageTooLargeError(ImageError):
    pass


class ImageTooSmallError(ImageError):
    pass


class SizeMismatchError(ImageError):
    pass


@dataclasses.dataclass(frozen=True)
class PairConfig:
    """How pairs are validated and cut.

    Attributes:
      scale: HR side / LR side.
      min_lr_size: smallest accepted LR height and width (after mod-crop).
      max_pixels: largest accepted pixel count of one image, checked from the header.
      hr_crop_size: if set, cut aligned HR/LR tiles of this HR side (a multiple of `scale`).
      hr_crop_stride: HR step between tiles (default: `hr_crop_size`, no overlap).
      png_compress_level: zlib level (0-9) for PNGs the job must encode; 1 is ~5x faster
        than PIL's default 6 for ~10% bigger files.
      hr_only: store no LR (`srgan-prepare --lr=none`): records are HR only, every other rule
        (mod-crop, min size of HR / scale, tiles, max pixels) as for synthesised LR.
    """

    scale: int
    min_lr_size: int = DEFAULT_MIN_LR_SIZE
    max_pixels: int = DEFAULT_MAX_PIXELS
    hr_crop_size: int | None = None
    hr_crop_stride: int | None = None
    png_compress_level: int = 1
    hr_only: bool = False

    def __post_init__(self):
        if self.scale not in schema.SCALES:
            raise ValueError(f"scale must be one of {schema.SCALES}, got {self.scale}")
        if self.hr_crop_size is not None and self.hr_crop_size % self.scale:
            raise ValueError(
                f"hr_crop_size {self.hr_crop_size} is not a multiple of the scale {self.scale}"
            )
        if self.hr_crop_stride is not None and not self.hr_crop_size:
            raise ValueError("hr_crop_stride needs hr_crop_size")
        if self.hr_crop_stride is not None and self.hr_crop_stride <= 0:
            raise ValueError(f"hr_crop_stride must be positive, got {self.hr_crop_stride}")
        if self.hr_crop_stride is not None and self.hr_crop_stride % self.scale:
            # Tile origins must sit on the LR grid, or HR and LR tiles would be misaligned.
            raise ValueError(
                f"hr_crop_stride {self.hr_crop_stride} is not a multiple of the scale {self.scale}"
            )
        if self.hr_crop_size and self.hr_crop_size // self.scale < self.min_lr_size:
            raise ValueError(
                f"hr_crop_size {self.hr_crop_size} gives LR tiles smaller than "
                f"min_lr_size={self.min_lr_size}"
            )


@dataclasses.dataclass(frozen=True)
class DecodedImage:
    """8-bit RGB pixels [h, w, 3] plus the source bytes when they can pass through."""

    pixels: np.ndarray
    rgb8_png: bytes | None


def _png_header(data):
    """(width, height, bit_depth, colour_type) from a PNG's IHDR, or None if not a PNG."""
    if not data.startswith(_PNG_SIGNATURE) or data[12:16] != b"IHDR" or len(data) < 26:
        return None
    width, height, bit_depth, colour_type = struct.unpack(">IIBB", data[16:26])
    return width, height, bit_depth, colour_type


def _check_pixel_count(width, height, max_pixels):
    if width * height > max_pixels:
        raise ImageTooLargeError(
            f"header claims {width}x{height} = {width * height} pixels, more than "
            f"max_pixels={max_pixels} (possible decompression bomb; not decoded)"
        )


def _open(data, max_pixels):
    """Opens the image lazily (header only) after the pixel-count check."""
    if not data:
        raise EmptyFileError("empty file (0 bytes)")
    header = _png_header(data)
    if header:  # PNG: check before PIL even parses it.
        _check_pixel_count(header[0], header[1], max_pixels)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            image = Image.open(io.BytesIO(data), formats=tuple(_FORMATS))
    except Image.DecompressionBombError as e:
        raise ImageTooLargeError(f"possible decompression bomb, not decoded: {e}") from None
    except (OSError, SyntaxError, ValueError) as e:  # UnidentifiedImageError is an OSError.
        raise NotAnImageError(f"not a readable image: {e}") from None
    _check_pixel_count(image.width, image.height, max_pixels)
    return image


def _to_rgb8(image):
    """8-bit RGB array from any PIL mode (alpha dropped, 16-bit scaled down)."""
    if image.mode.startswith("I;16") or image.mode in ("I", "F"):
        # convert("L") would clip 16-bit values at 255 instead of scaling them. (16-bit RGB(A)
        # PNGs arrive as 8-bit RGB: PIL keeps the high byte, v >> 8, at most one level from
        # the rounding v / 257 used here.)
        wide = np.asarray(image, dtype=np.float64)
        peak = 65535.0 if image.mode != "F" else max(float(wide.max()), 1.0)
        gray = np.clip(np.rint(wide * (255.0 / peak)), 0, 255).astype(np.uint8)
        return np.repeat(gray[..., None], 3, axis=-1)
    if image.mode != "RGB":
        image = image.convert(
            "RGBA" if "A" in image.mode or "transparency" in image.info else "RGB"
        )
    pixels = np.asarray(image)
    return np.ascontiguousarray(pixels[..., :3]) if pixels.shape[-1] == 4 else pixels


def is_image_name(path):
    """True when the file name ends in one of IMAGE_EXTENSIONS (any case)."""
    return path.lower().endswith(IMAGE_EXTENSIONS)


def decode_rgb(data, max_pixels=DEFAULT_MAX_PIXELS) -> DecodedImage:
    """Decodes and validates one encoded image: the one decode rule of every stage.

    Accepts the formats of IMAGE_EXTENSIONS (PNG, JPEG, BMP, GIF, TIFF, WebP), any bit depth
    and mode PIL reads; the pixels are always 8-bit RGB: 16-bit images are scaled (not
    clipped), grayscale and palette images expanded, alpha dropped.

    Raises:
      ImageError: empty, not an image of those formats, truncated/corrupt, or more than
        `max_pixels` pixels.
    """
    image = _open(data, max_pixels)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            image.load()
            pixels = _to_rgb8(image)
    except (OSError, SyntaxError, ValueError, EOFError) as e:
        raise CorruptImageError(f"corrupt or truncated {image.format} image: {e}") from None
    header = _png_header(data)
    passthrough = header is not None and header[2] == 8 and header[3] == _PNG_TRUECOLOR
    return DecodedImage(pixels=pixels, rgb8_png=data if passthrough else None)


def pixel_digest(pixels):
    """Hex SHA-256 of an image's decoded pixels and shape: equal for every encoding of them.

    The job splits by it (an image never sits in both splits) and drops exact duplicates by it.
    """
    digest = hashlib.sha256(f"{pixels.shape}|{pixels.dtype}|".encode("ascii"))
    digest.update(np.ascontiguousarray(pixels).tobytes())
    return digest.hexdigest()


def encode_png(pixels, compress_level=1):
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format="PNG", compress_level=compress_level)
    return buffer.getvalue()


def mod_crop(pixels, scale):
    """Crops bottom/right so both sides are multiples of `scale`."""
    height, width = pixels.shape[:2]
    return pixels[: height - height % scale, : width - width % scale]


def downscale(pixels, scale):
    """Antialiased bicubic downscale by an integer factor (PIL BICUBIC widens its kernel)."""
    height, width = pixels.shape[:2]
    small = Image.fromarray(pixels).resize((width // scale, height // scale), Image.BICUBIC)
    return np.asarray(small)


def tile_origins(length, crop, stride):
    """Start offsets covering [0, length): a regular grid plus a last tile flush with the end."""
    if length <= crop:
        return [0]
    origins = list(range(0, length - crop + 1, stride))
    if origins[-1] != length - crop:
        origins.append(length - crop)
    return origins


def _record(key, scale, hr_pixels, hr_png, lr_pixels, lr_png):
    """A PairRecord; lr_pixels None makes an HR-only one."""
    paired = lr_pixels is not None
    return schema.PairRecord(
        key=key,
        scale=scale,
        lr_png=lr_png if paired else None,
        lr_height=lr_pixels.shape[0] if paired else None,
        lr_width=lr_pixels.shape[1] if paired else None,
        hr_png=hr_png,
        hr_height=hr_pixels.shape[0],
        hr_width=hr_pixels.shape[1],
    )


def tile_key(key, y, x):
    """Key of the tile whose HR top-left corner is (y, x)."""
    return f"{key}_y{y:05d}_x{x:05d}"


def _tiles(key, hr, lr, config):
    scale, crop = config.scale, config.hr_crop_size
    stride = config.hr_crop_stride or crop
    records = []
    for y in tile_origins(hr.shape[0], crop, stride):
        for x in tile_origins(hr.shape[1], crop, stride):
            hr_tile = hr[y : y + crop, x : x + crop]
            lr_tile = lr_png = None
            if lr is not None:
                lr_tile = lr[y // scale : (y + crop) // scale, x // scale : (x + crop) // scale]
                lr_png = encode_png(lr_tile, config.png_compress_level)
            hr_png = encode_png(hr_tile, config.png_compress_level)
            records.append(_record(tile_key(key, y, x), scale, hr_tile, hr_png, lr_tile, lr_png))
    return records


def prepare_pair(key, hr: DecodedImage, lr: DecodedImage | None, config: PairConfig):
    """Turns decoded HR (and optional LR) images into one PairRecord, or one per tile.

    Args:
      key: the pair key (tile keys get a `_yYYYYY_xXXXXX` suffix, HR pixel offsets).
      hr: the decoded HR image.
      lr: the decoded LR image, or None to synthesise it from HR (or, with config.hr_only,
        to store none: HR-only records).
      config: validation and tiling rules.

    Returns:
      A list of schema.PairRecord (one unless `config.hr_crop_size` is set).

    Raises:
      SizeMismatchError: HR (mod-cropped) is not exactly scale x LR.
      ImageTooSmallError: an LR side is below `config.min_lr_size`.
    """
    scale = config.scale
    if config.hr_only and lr is not None:
        raise ValueError("hr_only stores no LR: prepare_pair got an LR image")
    hr_pixels = mod_crop(hr.pixels, scale)
    hr_cropped = hr_pixels.shape != hr.pixels.shape
    if config.hr_only:
        lr_pixels = None
        lr_size = hr_pixels.shape[0] // scale, hr_pixels.shape[1] // scale
    elif lr is None:
        lr_pixels = downscale(hr_pixels, scale)
    else:
        lr_pixels = lr.pixels
        expected = (hr_pixels.shape[0] // scale, hr_pixels.shape[1] // scale)
        if lr_pixels.shape[:2] != expected:
            raise SizeMismatchError(
                f"LR is {lr_pixels.shape[1]}x{lr_pixels.shape[0]} (WxH) but HR "
                f"{hr.pixels.shape[1]}x{hr.pixels.shape[0]} (mod-cropped "
                f"{hr_pixels.shape[1]}x{hr_pixels.shape[0]}) / {scale} is "
                f"{expected[1]}x{expected[0]}"
            )
    if lr_pixels is not None:
        lr_size = lr_pixels.shape[:2]
    if min(lr_size) < config.min_lr_size:
        raise ImageTooSmallError(
            f"LR would be {lr_size[1]}x{lr_size[0]} (WxH), smaller than "
            f"min_lr_size={config.min_lr_size}"
        )
    if config.hr_crop_size:
        return _tiles(key, hr_pixels, lr_pixels, config)
    level = config.png_compress_level
    hr_png = hr.rgb8_png if hr.rgb8_png and not hr_cropped else encode_png(hr_pixels, level)
    lr_png = None
    if lr_pixels is not None:
        lr_png = lr.rgb8_png if lr is not None and lr.rgb8_png else encode_png(lr_pixels, level)
    return [_record(key, scale, hr_pixels, hr_png, lr_pixels, lr_png)]


def load_rgb(path, max_pixels=DEFAULT_MAX_PIXELS):
    """The pixels of an image file by the one decode rule (decode_rgb): uint8 [h, w, 3].

    Data prep, evaluation and the serving client all read image files through decode_rgb, so a
    16-bit, grayscale, palette or RGBA file gives every stage the same 8-bit RGB pixels.
    Local paths only (the client must not need TensorFlow's file systems).

    Raises:
      OSError: the file cannot be read.
      ImageError: as decode_rgb, with the path in the message.
    """
    with open(path, "rb") as f:
        data = f.read()
    try:
        return decode_rgb(data, max_pixels).pixels
    except ImageError as e:
        raise type(e)(f"{path}: {e}") from None
