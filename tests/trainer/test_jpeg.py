"""trainer.jpeg against PIL's libjpeg: tables, PSNR on Set14 crops, batching, shapes, graph/XLA."""

import io

import numpy as np
import pytest
import tensorflow as tf
from PIL import Image

from tests import fixtures
from trainer import jpeg

# Set14 images that hold a 256x256 centre crop, including the grayscale one (img_003, mode L).
SET14_IMAGES = ("img_001", "img_003", "img_009", "img_014")


def pil_round_trip(image, quality):
    """uint8 [H, W, 3] through PIL's JPEG (libjpeg defaults: 4:2:0, fancy upsampling)."""
    buffer = io.BytesIO()
    Image.fromarray(image).save(buffer, format="JPEG", quality=quality)
    return np.asarray(Image.open(io.BytesIO(buffer.getvalue())).convert("RGB"))


def ours_uint8(images, quality):
    """uint8 [B, H, W, 3] through jpeg.compress, rounded to 8 bits as a file would be."""
    decoded = jpeg.compress(tf.constant(np.asarray(images, np.float32) / 255.0), quality)
    return np.clip(np.round(decoded.numpy() * 255.0), 0, 255).astype(np.uint8)


def psnr(a, b):
    mse = np.mean((np.asarray(a, np.float64) - np.asarray(b, np.float64)) ** 2)
    return float("inf") if mse == 0 else 10 * np.log10(255.0**2 / mse)


def smooth_image(height, width, seed):
    """A uint8 image whose colour varies slowly: 4:2:0 chroma alone caps fixtures.make_image
    (per-pixel colour noise) at ~34 dB even at quality 100, in PIL as here."""
    shape = (height // 16, width // 16, 3)
    small = np.random.default_rng(seed).integers(0, 256, shape, np.uint8)
    return np.asarray(Image.fromarray(small).resize((width, height), Image.BICUBIC))


def set14_crops(side=256):
    folder = fixtures.SHARED_DATA / "Set14_x4"
    if not folder.is_dir():
        pytest.skip(f"{folder} not available")
    crops = []
    for name in SET14_IMAGES:
        image = np.asarray(Image.open(folder / f"{name}_SRF_4_HR.png").convert("RGB"))
        top, left = (image.shape[0] - side) // 2, (image.shape[1] - side) // 2
        crops.append(image[top : top + side, left : left + side])
    return np.stack(crops)


@pytest.mark.parametrize("quality", [1, 10, 37, 50, 75, 95, 100])
def test_tables_are_the_ones_libjpeg_writes(quality):
    buffer = io.BytesIO()
    Image.fromarray(np.zeros((16, 16, 3), np.uint8)).save(buffer, "JPEG", quality=quality)
    written = Image.open(buffer).quantization  # natural order, luma then chroma
    tables = jpeg.quantisation_tables(tf.constant([quality - 0.4], tf.float32)).numpy()[0]
    np.testing.assert_array_equal(tables[0].ravel(), written[0])
    np.testing.assert_array_equal(tables[1].ravel(), written[1])


def test_set14_psnr_matches_pil_at_30_60_95():
    crops = set14_crops()
    qualities = (30, 60, 95)
    # One call: every crop at every quality, a per-image quality vector.
    batch = np.concatenate([crops] * len(qualities))
    per_image = np.repeat(np.array(qualities, np.float32), len(crops))
    ours = ours_uint8(batch, tf.constant(per_image)).reshape((len(qualities),) + crops.shape)
    for q_index, quality in enumerate(qualities):
        for crop, decoded in zip(crops, ours[q_index], strict=True):
            reference = pil_round_trip(crop, quality)
            # Measured: |difference| <= 0.05 dB; ours vs PIL's pixels >= 46.3 dB.
            assert psnr(decoded, crop) == pytest.approx(psnr(reference, crop), abs=0.5)
            assert psnr(decoded, reference) > 45.0


def test_odd_sizes_keep_their_shape_and_match_pil_at_the_edges():
    image = fixtures.make_image(37, 53, seed=3)
    decoded = ours_uint8(image[None], 50.0)[0]
    assert decoded.shape == (37, 53, 3)
    # The padding to whole MCUs is libjpeg's: the last row and column agree with PIL too.
    reference = pil_round_trip(image, 50)
    assert psnr(decoded, reference) > 42.0
    assert psnr(decoded[-1], reference[-1]) > 40.0
    assert psnr(decoded[:, -1], reference[:, -1]) > 40.0


def test_a_batch_with_different_qualities_equals_each_image_alone():
    images = np.stack([fixtures.make_image(40, 48, seed=s) for s in range(3)]) / 255.0
    qualities = np.array([12.0, 47.6, 88.0], np.float32)
    together = jpeg.compress(tf.constant(images, tf.float32), tf.constant(qualities)).numpy()
    for image, quality, batched in zip(images, qualities, together, strict=True):
        alone = jpeg.compress(tf.constant(image[None], tf.float32), quality).numpy()[0]
        np.testing.assert_allclose(batched, alone, atol=1e-5)
    # Different qualities really were applied: the images differ from their quality-88 versions.
    at_88 = jpeg.compress(tf.constant(images, tf.float32), 88.0).numpy()
    assert not np.allclose(together[0], at_88[0], atol=1e-3)


def test_strength_grows_as_quality_falls_and_100_is_near_lossless():
    image = smooth_image(64, 64, seed=5)
    qualities = [100.0, 95.0, 60.0, 30.0, 10.0]
    decoded = ours_uint8(np.stack([image] * len(qualities)), tf.constant(qualities))
    scores = [psnr(d, image) for d in decoded]
    assert scores[0] > 40.0
    assert scores == sorted(scores, reverse=True)
    assert scores[1] - scores[-1] > 5.0


def test_output_is_float_in_range_and_not_rounded_to_8_bits():
    image = fixtures.make_image(24, 24, seed=6) / 255.0
    decoded = jpeg.compress(tf.constant(image[None], tf.float32), 40.0).numpy()
    assert decoded.dtype == np.float32 and decoded.min() >= 0.0 and decoded.max() <= 1.0
    assert not np.allclose(decoded * 255.0, np.round(decoded * 255.0), atol=1e-3)


def test_graph_with_unknown_batch_and_xla_agree_with_eager():
    images = tf.constant(
        np.stack([fixtures.make_image(32, 40, seed=s) for s in range(3)]) / 255.0, tf.float32
    )
    qualities = tf.constant([20.0, 50.0, 80.0])
    eager = jpeg.compress(images, qualities).numpy()
    spec = [tf.TensorSpec([None, None, None, 3], tf.float32), tf.TensorSpec([None], tf.float32)]
    graph = tf.function(jpeg.compress, input_signature=spec)
    np.testing.assert_allclose(graph(images, qualities).numpy(), eager, atol=1e-5)
    np.testing.assert_allclose(graph(images[:1], qualities[:1]).numpy(), eager[:1], atol=1e-5)
    # XLA compiles it; float re-association may flip a rare rounding (a coefficient or an 8-bit
    # sample), so it agrees closely, not bit for bit.
    compiled = tf.function(jpeg.compress, jit_compile=True)(images, qualities).numpy()
    assert compiled.shape == eager.shape
    assert psnr(compiled * 255.0, eager * 255.0) > 45.0


def test_bad_input_gets_a_clear_error():
    images = tf.zeros([1, 8, 8, 3])
    with pytest.raises(tf.errors.InvalidArgumentError, match="quality must be >= 1"):
        jpeg.compress(images, 0.0)
    with pytest.raises(tf.errors.InvalidArgumentError, match="quality must be <= 100"):
        jpeg.compress(images, tf.constant([101.0]))
    with pytest.raises(TypeError, match="float32"):
        jpeg.compress(tf.zeros([1, 8, 8, 3], tf.uint8), 50.0)
    with pytest.raises(ValueError, match="height, width, 3"):
        jpeg.compress(tf.zeros([1, 8, 8, 4]), 50.0)
    with pytest.raises(ValueError, match="scalar or"):
        jpeg.compress(images, tf.zeros([1, 1]))
