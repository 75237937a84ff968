"""Y-channel PSNR/SSIM: the published bicubic baselines, exact cases, and a reference SSIM."""

import numpy as np
import pytest
from skimage.metrics import structural_similarity

from tests import fixtures
from trainer import evaluation, metrics

SHARED_DATA = fixtures.SHARED_DATA


def _bicubic_means(folder):
    if not (SHARED_DATA / folder).is_dir():
        pytest.skip(f"{SHARED_DATA / folder} not available")
    found = evaluation.list_pairs(str(SHARED_DATA / folder), 4)
    report = evaluation.evaluate_pairs(None, found.pairs, 4, found.rejected)
    assert report.skipped == []
    return len(report.images), report.means()["bicubic"]


def test_set5_bicubic_reproduces_the_published_baseline():
    count, bicubic = _bicubic_means("Set5_x4")
    assert count == 5
    assert bicubic["psnr"] == pytest.approx(28.42, abs=0.01)
    # Published 0.8104 came from MATLAB imresize; the same LR files with TF bicubic give 0.8102.
    assert bicubic["ssim"] == pytest.approx(0.8104, abs=0.001)


def test_set14_bicubic_with_its_grayscale_image():
    count, bicubic = _bicubic_means("Set14_x4")
    assert count == 14  # img_003 (mode L) is measured, not skipped
    assert 26.0 <= bicubic["psnr"] <= 26.1
    assert bicubic["ssim"] == pytest.approx(0.7027, abs=0.002)


def test_perfect_reconstruction_gives_infinite_psnr_and_unit_ssim():
    hr = fixtures.make_image(48, 40, seed=1)
    psnr, ssim = metrics.psnr_ssim_y(hr, hr.copy(), shave=4)
    assert psnr == float("inf")
    assert ssim == pytest.approx(1.0, abs=1e-12)


def test_psnr_of_a_known_error():
    hr = np.full((32, 32, 3), 100, np.uint8)
    sr = hr.copy()
    sr[..., 1] += 4  # green +4 -> Y + 4 * 128.553 / 255 = +2.0165 -> rounded +2 everywhere
    psnr, _ = metrics.psnr_ssim_y(sr, hr, shave=0)
    assert psnr == pytest.approx(10 * np.log10(255**2 / 4.0))


def test_y_channel_is_matlab_rgb2ycbcr():
    image = np.array([[[0, 0, 0], [255, 255, 255], [255, 0, 0]]], np.uint8)
    np.testing.assert_array_equal(metrics.y_channel(image), [[16, 235, 81]])
    gray = np.array([[0, 255]], np.uint8)  # [H, W] grayscale = R = G = B
    np.testing.assert_array_equal(metrics.y_channel(gray), [[16, 235]])


def test_ssim_matches_scikit_image_gaussian_ssim():
    rng = np.random.default_rng(0)
    a = fixtures.make_image(40, 56, seed=2)
    b = np.clip(a.astype(int) + rng.integers(-20, 21, a.shape), 0, 255).astype(np.uint8)
    ya, yb = metrics.y_channel(a), metrics.y_channel(b)
    expected = structural_similarity(
        ya, yb, data_range=255, gaussian_weights=True, sigma=1.5, use_sample_covariance=False
    )
    assert metrics.ssim(ya, yb) == pytest.approx(expected, abs=1e-9)


def test_bad_inputs_are_clear_errors():
    hr = fixtures.make_image(32, 32)
    with pytest.raises(ValueError, match="SR is 16x32 but HR is 32x32"):
        metrics.psnr_ssim_y(hr[:, :16], hr, shave=4)
    with pytest.raises(ValueError, match="at least 11x11"):
        metrics.psnr_ssim_y(hr[:16, :16], hr[:16, :16], shave=4)
    with pytest.raises(ValueError, match="uint8"):
        metrics.psnr_ssim_y(hr.astype(np.float32), hr, shave=4)
