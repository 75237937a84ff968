"""PSNR and SSIM on the Y channel, the convention of the published SR benchmark tables.

  Y:     MATLAB rgb2ycbcr of a uint8 image (BT.601, studio swing), which returns uint8:
         Y = round(16 + (65.481 R + 128.553 G + 24.966 B) / 255), R, G, B in [0, 255].
         Keeping Y in floating point instead gives Set5 bicubic 28.43 dB, not the published 28.42.
  PSNR:  10 log10(255^2 / MSE) on Y after shaving `shave` pixels from every border.
  SSIM:  Wang et al.'s ssim_index.m: 11x11 Gaussian window, sigma 1.5, K1 0.01, K2 0.03,
         L 255, 'valid' filtering, mean of the SSIM map.

Plain numpy (float64), so the numbers do not depend on the TF device or kernel.
"""

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view

_Y_WEIGHTS = np.array([65.481, 128.553, 24.966]) / 255.0
_SSIM_WINDOW = 11
_SSIM_SIGMA = 1.5
_K1, _K2 = 0.01, 0.03
_PEAK = 255.0


def y_channel(image_uint8):
    """uint8 [H, W, 3] RGB (or [H, W] grayscale) -> float64 [H, W] Y in [16, 235], rounded."""
    image = np.asarray(image_uint8)
    if image.dtype != np.uint8:
        raise ValueError(f"expected a uint8 image, got {image.dtype}")
    if image.ndim == 2:  # grayscale: R = G = B
        image = np.repeat(image[..., None], 3, axis=-1)
    if image.ndim != 3 or image.shape[-1] != 3:
        raise ValueError(f"expected an [H, W, 3] RGB image, got shape {image.shape}")
    return np.round(16.0 + image.astype(np.float64) @ _Y_WEIGHTS)


def shave_border(image, shave):
    if shave == 0:
        return image
    return image[shave:-shave, shave:-shave]


def psnr(a, b):
    """PSNR in dB of two float arrays on the [0, 255] scale; inf when they are equal."""
    mse = np.mean((a - b) ** 2)
    return float("inf") if mse == 0 else float(10.0 * np.log10(_PEAK**2 / mse))


def _gaussian_window():
    offsets = np.arange(_SSIM_WINDOW) - _SSIM_WINDOW // 2
    weights = np.exp(-(offsets**2) / (2.0 * _SSIM_SIGMA**2))
    return weights / weights.sum()


def _filter_valid(image, kernel):
    # The 2-D Gaussian is separable: filter rows, then columns ('valid': no padding).
    rows = sliding_window_view(image, len(kernel), axis=0) @ kernel
    return sliding_window_view(rows, len(kernel), axis=1) @ kernel


def ssim(a, b):
    """Mean SSIM of two float [H, W] arrays on the [0, 255] scale (sides >= 11)."""
    if min(a.shape) < _SSIM_WINDOW:
        raise ValueError(
            f"SSIM needs images of at least {_SSIM_WINDOW}x{_SSIM_WINDOW} pixels "
            f"after shaving, got {a.shape[1]}x{a.shape[0]}"
        )
    kernel = _gaussian_window()
    c1, c2 = (_K1 * _PEAK) ** 2, (_K2 * _PEAK) ** 2
    mu_a, mu_b = _filter_valid(a, kernel), _filter_valid(b, kernel)
    var_a = _filter_valid(a * a, kernel) - mu_a**2
    var_b = _filter_valid(b * b, kernel) - mu_b**2
    cov = _filter_valid(a * b, kernel) - mu_a * mu_b
    ssim_map = ((2 * mu_a * mu_b + c1) * (2 * cov + c2)) / (
        (mu_a**2 + mu_b**2 + c1) * (var_a + var_b + c2)
    )
    return float(np.mean(ssim_map))


def psnr_ssim_y(sr_uint8, hr_uint8, shave):
    """PSNR (dB) and SSIM of an upscaled image against its HR original, on Y.

    Args:
      sr_uint8: uint8 [H, W, 3] (or [H, W]) super-resolved image.
      hr_uint8: uint8 image of the same size.
      shave: pixels removed from every border first (the scale factor, by convention).

    Returns:
      (psnr, ssim) as Python floats; psnr is inf for identical images.
    """
    sr_y, hr_y = y_channel(sr_uint8), y_channel(hr_uint8)
    if sr_y.shape != hr_y.shape:
        raise ValueError(
            f"SR is {sr_y.shape[1]}x{sr_y.shape[0]} but HR is {hr_y.shape[1]}x{hr_y.shape[0]}"
        )
    sr_y, hr_y = shave_border(sr_y, shave), shave_border(hr_y, shave)
    return psnr(sr_y, hr_y), ssim(sr_y, hr_y)
