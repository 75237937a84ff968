"""Decoding, normalisation, validation and tiling rules of data_prep.images."""

import io

import numpy as np
import pytest
from PIL import Image

from data_prep import images
from tests import fixtures
from tests.data_prep import image_files

RGB = fixtures.make_image(32, 48, seed=1)


def _decode(data, **kwargs):
    return images.decode_rgb(data, **kwargs)


def test_rgb_png_passes_through_unchanged():
    data = fixtures.png_bytes(RGB)
    decoded = _decode(data)
    np.testing.assert_array_equal(decoded.pixels, RGB)
    assert decoded.rgb8_png is data


@pytest.mark.parametrize("mode", ["L", "P", "RGBA", "LA"])
def test_modes_convert_to_rgb8(mode):
    data = image_files.encoded(RGB, mode)
    expected = np.asarray(Image.open(io.BytesIO(data)).convert("RGB"))
    decoded = _decode(data)
    assert decoded.pixels.dtype == np.uint8 and decoded.pixels.shape == (32, 48, 3)
    np.testing.assert_array_equal(decoded.pixels, expected)
    assert decoded.rgb8_png is None  # not RGB8: re-encoded later


def test_rgba_drops_alpha_without_compositing():
    rgba = np.dstack([RGB, np.zeros(RGB.shape[:2], np.uint8)])  # fully transparent
    decoded = _decode(fixtures.png_bytes(rgba))
    np.testing.assert_array_equal(decoded.pixels, RGB)


def test_16bit_gray_scales_not_clips():
    gray16 = (np.arange(32 * 48).reshape(32, 48) * 40).astype(np.uint16)
    decoded = _decode(fixtures.png_bytes(gray16))
    expected = np.rint(gray16 / 257.0).astype(np.uint8)
    np.testing.assert_array_equal(decoded.pixels[..., 0], expected)
    np.testing.assert_array_equal(decoded.pixels[..., 2], expected)


def test_16bit_rgb_converts_and_is_not_passed_through():
    decoded = _decode(image_files.rgb16_png(RGB))
    np.testing.assert_array_equal(decoded.pixels, RGB)
    assert decoded.rgb8_png is None


def test_jpeg_is_accepted():
    decoded = _decode(image_files.encoded(RGB, fmt="JPEG"))
    assert decoded.pixels.shape == (32, 48, 3) and decoded.rgb8_png is None


@pytest.mark.parametrize(
    "data, error, words",
    [
        (b"", images.EmptyFileError, "empty file"),
        (b"this is not a png at all", images.NotAnImageError, "not a readable image"),
        (
            image_files.truncated_png(fixtures.make_image(64, 64)),
            images.CorruptImageError,
            "truncated",
        ),
        (image_files.bomb_png(), images.ImageTooLargeError, "100000x100000"),
    ],
)
def test_bad_files_raise_clear_errors(data, error, words):
    with pytest.raises(error, match=words):
        _decode(data)


def test_max_pixels_is_checked_before_decoding():
    with pytest.raises(images.ImageTooLargeError, match="max_pixels=1000"):
        _decode(fixtures.png_bytes(RGB), max_pixels=1000)


def _pair(hr, lr=None, **config):
    hr_decoded = _decode(fixtures.png_bytes(hr))
    lr_decoded = None if lr is None else _decode(fixtures.png_bytes(lr))
    return images.prepare_pair(
        "k", hr_decoded, lr_decoded, images.PairConfig(scale=4, min_lr_size=4, **config)
    )


def _pixels(png):
    return np.asarray(Image.open(io.BytesIO(png)))


def test_synthesised_lr_is_bicubic_of_mod_cropped_hr():
    hr = fixtures.make_image(35, 50, seed=2)
    (record,) = _pair(hr)
    assert (record.hr_height, record.hr_width, record.lr_height, record.lr_width) == (32, 48, 8, 12)
    np.testing.assert_array_equal(_pixels(record.hr_png), hr[:32, :48])
    np.testing.assert_array_equal(_pixels(record.lr_png), fixtures.downscale(hr[:32, :48], 4))


def test_given_pair_passes_through_source_bytes():
    hr = fixtures.make_image(32, 48, seed=3)
    lr = fixtures.downscale(hr, 4)
    (record,) = _pair(hr, lr)
    assert record.hr_png == fixtures.png_bytes(hr) and record.lr_png == fixtures.png_bytes(lr)


def test_lr_size_mismatch_is_rejected():
    hr = fixtures.make_image(32, 48, seed=3)
    with pytest.raises(images.SizeMismatchError, match="LR is 11x8"):
        _pair(hr, fixtures.make_image(8, 11))


def test_too_small_is_rejected():
    with pytest.raises(images.ImageTooSmallError, match="min_lr_size=24"):
        images.prepare_pair("k", _decode(fixtures.png_bytes(RGB)), None, images.PairConfig(scale=4))


def test_tiles_are_aligned_and_cover_the_image():
    hr = fixtures.make_image(40, 56, seed=4)
    records = _pair(hr, hr_crop_size=24, hr_crop_stride=16)
    lr = fixtures.downscale(hr, 4)
    origins = [(y, x) for y in (0, 16) for x in (0, 16, 32)]
    assert [r.key for r in records] == [images.tile_key("k", y, x) for y, x in origins]
    for record, (y, x) in zip(records, origins, strict=True):
        np.testing.assert_array_equal(_pixels(record.hr_png), hr[y : y + 24, x : x + 24])
        np.testing.assert_array_equal(
            _pixels(record.lr_png), lr[y // 4 : y // 4 + 6, x // 4 : x // 4 + 6]
        )


@pytest.mark.parametrize(
    "kwargs, words",
    [
        ({"hr_crop_size": 30}, "multiple of the scale"),
        ({"hr_crop_stride": 16}, "needs hr_crop_size"),
        ({"hr_crop_size": 96, "hr_crop_stride": 50}, "stride 50 is not a multiple"),
        ({"hr_crop_size": 48, "min_lr_size": 24}, "smaller than min_lr_size"),
        ({"scale": 5}, "scale must be"),
    ],
)
def test_config_rejects_inconsistent_values(kwargs, words):
    with pytest.raises(ValueError, match=words):
        images.PairConfig(**{"scale": 4, **kwargs})


@pytest.mark.parametrize("extension", images.IMAGE_EXTENSIONS)
def test_every_image_extension_decodes(extension):
    """IMAGE_EXTENSIONS names exactly formats decode_rgb accepts (PIL's format for the ending)."""
    fmt = Image.registered_extensions()[extension]
    decoded = _decode(image_files.encoded(RGB, fmt=fmt))
    assert decoded.pixels.shape == (32, 48, 3) and decoded.pixels.dtype == np.uint8
    assert images.is_image_name(f"dir/photo{extension.upper()}")


@pytest.mark.parametrize("fmt", ["PPM", "TGA", "ICO", "PCX"])
def test_formats_outside_image_extensions_are_refused(fmt):
    """PIL decodes these, but they are not in IMAGE_EXTENSIONS: the decode rule refuses them."""
    assert not any(Image.registered_extensions()[e] == fmt for e in images.IMAGE_EXTENSIONS)
    with pytest.raises(images.NotAnImageError, match="not a readable image"):
        _decode(image_files.encoded(RGB, fmt=fmt))
    assert not images.is_image_name(f"photo.{fmt.lower()}")


def test_load_rgb_names_the_file(tmp_path):
    path = tmp_path / "broken.png"
    path.write_bytes(b"not an image")
    with pytest.raises(images.NotAnImageError, match=f"^{path}: not a readable image"):
        images.load_rgb(str(path))
