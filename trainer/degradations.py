"""Real-ESRGAN's second-order degradation, as batched stateless TensorFlow ops.

Real-ESRGAN (Wang et al. 2021) trains on HR photos alone: every step it synthesises the LR input
from the HR patch with two rounds of blur -> random resize -> noise -> JPEG, then a final
[resize to LR + sinc filter] and JPEG in random order. This module is our TensorFlow version of
that pipeline (xinntao/Real-ESRGAN `realesrgan/models/realesrgan_model.py` feed_data, with the
per-sample kernels of `realesrgan/data/realesrgan_dataset.py` and the primitives of BasicSR's
`basicsr/data/degradations.py` and `basicsr/utils/img_process_util.py`).

Which choices are per sample and which per batch follows Real-ESRGAN's feed_data:
  per sample: the three blur kernels (type, size, sigmas, angle, beta, sinc cutoff), the noise
    strength and grey-or-colour noise, the JPEG qualities;
  per batch: the resize direction, factor and interpolation of each resize, Gaussian-or-Poisson
    noise, whether the second blur happens, and the order of the final stage. (Real-ESRGAN
    draws these with Python's `random` once per batch, and mixes batches with a 180-pair queue
    that the trainer, not this module, may add.)

Every random draw is a `tf.random.stateless_*` op on a seed folded from the one `seed` argument,
so the same seed gives bit-identical LR on the same machine, and `step_seed` gives each
(run seed, step, replica) its own seed. Where our ops differ from PyTorch's: `tf.image.resize`
bicubic uses Keys a=-0.5 (PyTorch a=-0.75); grey noise is drawn per sample (BasicSR draws one
[H, W] grey field for the whole batch); blur runs as an FFT product (exact up to float32
rounding, ~1e-6), not as a 21x21 direct convolution.
"""

import dataclasses
import math

import tensorflow as tf

from trainer import jpeg

KERNEL_SIZE = 21  # Real-ESRGAN pads every blur and sinc kernel to 21x21 (realesrgan_dataset.py)
KERNEL_SIZES = tuple(range(7, 22, 2))  # `kernel_range = [2 * v + 1 for v in range(3, 11)]`
KERNEL_TYPES = (
    "iso",
    "aniso",
    "generalized_iso",
    "generalized_aniso",
    "plateau_iso",
    "plateau_aniso",
)
RESIZE_METHODS = ("area", "bilinear", "bicubic")  # feed_data: random.choice of these
SCALES = (2, 3, 4, 8)
# USMSharp(radius=50, sigma=0) in img_process_util.py: radius made odd (51), cv2's sigma for 0:
# 0.3 * ((51 - 1) / 2 - 1) + 0.8 = 8.0; weight 0.5, threshold 10 (of 255).
USM_SIZE = 51
USM_SIGMA = 8.0
USM_WEIGHT = 0.5
USM_THRESHOLD = 10.0 / 255.0

# Seed streams: each random decision folds its own constant into the step seed.
(
    _S_KERNEL1,
    _S_KERNEL2,
    _S_SINC,
    _S_RESIZE1,
    _S_NOISE1,
    _S_JPEG1,
    _S_BLUR2,
    _S_RESIZE2,
    _S_NOISE2,
    _S_ORDER,
    _S_RESIZE3,
    _S_JPEG2,
) = range(12)


@dataclasses.dataclass(frozen=True)
class DegradationConfig:
    """Every range and probability of the pipeline; defaults are Real-ESRGAN x4plus.

    Sources: options/train_realesrgan_x4plus.yml (model block: resize_*, noise, jpeg,
    second_blur_prob, l1/percep/gan_gt_usm; datasets.train block: kernel_*, sinc_prob*,
    blur_sigma*, beta*_range*, final_sinc_prob); realesrgan_dataset.py for the hard-coded kernel
    sizes 7..21 and the sinc cutoff ranges.

    usm_target: the loss target is the unsharp-masked HR (Real-ESRGAN's l1_gt_usm and
      percep_gt_usm are True; gan_gt_usm is False: the discriminator sees the plain HR, which the
      trainer gets from its own `hr`).
    usm_input: degrade the unsharp-masked HR, as feed_data does (`filter2D(self.gt_usm, ...)`).
    """

    scale: int = 4
    usm_target: bool = True
    usm_input: bool = True
    # first degradation: kernel (dataset block of the yml)
    kernel_prob: tuple = (0.45, 0.25, 0.12, 0.03, 0.12, 0.03)  # in KERNEL_TYPES order
    sinc_prob: float = 0.1
    blur_sigma: tuple = (0.2, 3.0)
    betag_range: tuple = (0.5, 4.0)
    betap_range: tuple = (1.0, 2.0)
    # first degradation: resize, noise, JPEG (model block of the yml)
    resize_prob: tuple = (0.2, 0.7, 0.1)  # up, down, keep
    resize_range: tuple = (0.15, 1.5)
    gaussian_noise_prob: float = 0.5
    noise_range: tuple = (1.0, 30.0)  # sigma in 1/255 units
    poisson_scale_range: tuple = (0.05, 3.0)
    gray_noise_prob: float = 0.4
    jpeg_range: tuple = (30.0, 95.0)
    # second degradation
    second_blur_prob: float = 0.8
    kernel_prob2: tuple = (0.45, 0.25, 0.12, 0.03, 0.12, 0.03)
    sinc_prob2: float = 0.1
    blur_sigma2: tuple = (0.2, 1.5)
    betag_range2: tuple = (0.5, 4.0)
    betap_range2: tuple = (1.0, 2.0)
    resize_prob2: tuple = (0.3, 0.4, 0.3)
    resize_range2: tuple = (0.3, 1.2)
    gaussian_noise_prob2: float = 0.5
    noise_range2: tuple = (1.0, 25.0)
    poisson_scale_range2: tuple = (0.05, 2.5)
    gray_noise_prob2: float = 0.4
    jpeg_range2: tuple = (30.0, 95.0)
    # final stage
    final_sinc_prob: float = 0.8

    def __post_init__(self):
        if self.scale not in SCALES:
            raise ValueError(f"scale must be one of {SCALES}, got {self.scale}.")
        for name in ("kernel_prob", "kernel_prob2"):
            _check_probs(name, getattr(self, name), len(KERNEL_TYPES))
        for name in ("resize_prob", "resize_prob2"):
            _check_probs(name, getattr(self, name), 3)
        for name in (
            "sinc_prob",
            "sinc_prob2",
            "gaussian_noise_prob",
            "gaussian_noise_prob2",
            "gray_noise_prob",
            "gray_noise_prob2",
            "second_blur_prob",
            "final_sinc_prob",
        ):
            value = getattr(self, name)
            if not 0.0 <= value <= 1.0:
                raise ValueError(f"{name} must be a probability in [0, 1], got {value}.")
        for name, low, high in (
            ("blur_sigma", 1e-3, None),
            ("blur_sigma2", 1e-3, None),
            ("noise_range", 0.0, None),
            ("noise_range2", 0.0, None),
            ("poisson_scale_range", 0.0, None),
            ("poisson_scale_range2", 0.0, None),
            ("jpeg_range", 1.0, 100.0),
            ("jpeg_range2", 1.0, 100.0),
        ):
            _check_range(name, getattr(self, name), low, high)
        # Beta and resize ranges are split at 1 (uniform below 1 or above 1), as BasicSR assumes.
        for name, low in (("betag_range", 1e-3), ("betag_range2", 1e-3)):
            _check_range(name, getattr(self, name), low, None, around_one=True)
        for name in ("betap_range", "betap_range2", "resize_range", "resize_range2"):
            _check_range(name, getattr(self, name), 1e-3, None, around_one=True)


def _check_probs(name, probs, length):
    if len(probs) != length or any(p < 0 for p in probs) or abs(sum(probs) - 1.0) > 1e-6:
        raise ValueError(
            f"{name} must be {length} non-negative probabilities summing to 1: {probs}"
        )


def _check_range(name, value, low, high, around_one=False):
    if len(value) != 2 or not value[0] <= value[1]:
        raise ValueError(f"{name} must be (low, high) with low <= high, got {value}.")
    if value[0] < low or (high is not None and value[1] > high):
        top = "" if high is None else f" and <= {high}"
        raise ValueError(f"{name} must be >= {low}{top}, got {value}.")
    if around_one and not value[0] <= 1.0 <= value[1]:
        raise ValueError(f"{name} must contain 1 (drawn below or above 1), got {value}.")


# ----------------------------------------------------------------------------- seeds


def step_seed(seed, step, replica_id):
    """The stateless seed of one step on one replica: fold (step, replica) into (seed, 0).

    Depends on nothing but the three numbers, so a resumed run draws what an uninterrupted run
    drew at the same step, and two replicas at the same step draw different degradations.
    """
    base = tf.stack([tf.cast(seed, tf.int64), tf.constant(0, tf.int64)])
    seed = tf.random.experimental.stateless_fold_in(base, tf.cast(step, tf.int64))
    return tf.random.experimental.stateless_fold_in(seed, tf.cast(replica_id, tf.int64))


def _sub(seed, stream):
    return tf.random.experimental.stateless_fold_in(seed, stream)


def _uniform(seed, shape, low, high):
    return tf.random.stateless_uniform(shape, seed, minval=low, maxval=high)


def _split_uniform(seed, shape, value_range):
    """Uniform below 1 or above 1 with equal odds (BasicSR's beta draw)."""
    below = _uniform(_sub(seed, 0), shape, value_range[0], 1.0)
    above = _uniform(_sub(seed, 1), shape, 1.0, value_range[1])
    return tf.where(_uniform(_sub(seed, 2), shape, 0.0, 1.0) < 0.5, below, above)


# ----------------------------------------------------------------------------- kernels


def _grid():
    ax = tf.range(KERNEL_SIZE, dtype=tf.float32) - (KERNEL_SIZE - 1) / 2
    yy, xx = tf.meshgrid(ax, ax, indexing="ij")
    return xx[None], yy[None]  # [1, 21, 21]


def _support_mask(sizes):
    """1 inside each sample's centred size x size square of the 21x21 grid: padding a smaller
    kernel to 21 (as Real-ESRGAN does) is the same as zeroing the grid outside its support."""
    xx, yy = _grid()
    half = tf.cast(sizes // 2, tf.float32)[:, None, None]
    return tf.cast((tf.abs(xx) <= half) & (tf.abs(yy) <= half), tf.float32)


def _normalise(kernels):
    return kernels / tf.reduce_sum(kernels, axis=[1, 2], keepdims=True)


def _random_sizes(seed, batch):
    index = tf.random.stateless_uniform(
        [batch], seed, minval=0, maxval=len(KERNEL_SIZES), dtype=tf.int32
    )
    return 2 * index + KERNEL_SIZES[0]


def bivariate_kernels(kind, sigma_x, sigma_y, theta, beta, sizes):
    """[B, 21, 21] kernels of one family from per-sample parameters (each [B]).

    kind: "gaussian" exp(-Q/2), "generalized" exp(-Q^beta/2) or "plateau" 1/(1+Q^beta), with
    Q = x^T Sigma^-1 x and Sigma = R(theta) diag(sigma_x^2, sigma_y^2) R(theta)^T (BasicSR's
    sigma_matrix2), cut to each sample's size and normalised to sum 1.
    """
    xx, yy = _grid()
    sx2, sy2 = (sigma_x**2)[:, None, None], (sigma_y**2)[:, None, None]
    cos, sin = tf.cos(theta)[:, None, None], tf.sin(theta)[:, None, None]
    # Sigma^-1 = R diag(1/sx2, 1/sy2) R^T; u, v are the grid in the kernel's own axes.
    u = cos * xx + sin * yy
    v = -sin * xx + cos * yy
    q = u * u / sx2 + v * v / sy2
    beta = beta[:, None, None]
    if kind == "gaussian":
        kernel = tf.exp(-0.5 * q)
    elif kind == "generalized":
        kernel = tf.exp(-0.5 * tf.pow(q, beta))
    elif kind == "plateau":
        kernel = 1.0 / (tf.pow(q, beta) + 1.0)
    else:
        raise ValueError(f"Unknown kernel family {kind!r}.")
    return _normalise(kernel * _support_mask(sizes))


def circular_lowpass_kernel(cutoff, sizes):
    """[B, 21, 21] 2-D sinc (circular low-pass) kernels: cutoff * J1(cutoff r) / (2 pi r), centre
    cutoff^2 / (4 pi), cut to each sample's size and normalised (BasicSR's function of the same
    name). cutoff, sizes: [B] radians and odd sizes."""
    xx, yy = _grid()
    r = tf.sqrt(xx * xx + yy * yy)
    w = cutoff[:, None, None]
    safe_r = tf.where(r > 0, r, 1.0)
    kernel = tf.where(
        r > 0,
        w * tf.math.special.bessel_j1(w * safe_r) / (2 * math.pi * safe_r),
        w * w / (4 * math.pi),
    )
    return _normalise(kernel * _support_mask(sizes))


def _sinc_cutoffs(seed, sizes):
    """omega_c ~ U[pi/3, pi] for kernels smaller than 13, else U[pi/5, pi] (realesrgan_dataset)."""
    unit = _uniform(seed, tf.shape(sizes), 0.0, 1.0)
    low = tf.where(sizes < 13, math.pi / 3, math.pi / 5)
    return low + unit * (math.pi - low)


def random_kernels(seed, batch, config, second=False):
    """[B, 21, 21] blur kernels of the first (or second) degradation, one per sample.

    Per sample, as realesrgan_dataset.py: a size from 7..21 (odd); with sinc_prob a sinc kernel,
    else a type from KERNEL_TYPES by kernel_prob with sigma_x, sigma_y ~ U(blur_sigma), angle
    ~ U[-pi, pi] (isotropic: sigma_y = sigma_x, angle 0) and beta from betag / betap range.
    """
    suffix = "2" if second else ""
    kernel_prob = getattr(config, "kernel_prob" + suffix)
    sigma_range = getattr(config, "blur_sigma" + suffix)
    betag = getattr(config, "betag_range" + suffix)
    betap = getattr(config, "betap_range" + suffix)
    sinc_prob = getattr(config, "sinc_prob" + suffix)
    shape = [batch]
    sizes = _random_sizes(_sub(seed, 0), batch)
    kind = tf.random.stateless_categorical(
        tf.math.log([list(kernel_prob)]), batch, _sub(seed, 1), dtype=tf.int32
    )[0]
    isotropic = kind % 2 == 0  # KERNEL_TYPES alternates iso / aniso
    sigma_x = _uniform(_sub(seed, 2), shape, *sigma_range)
    sigma_y = tf.where(isotropic, sigma_x, _uniform(_sub(seed, 3), shape, *sigma_range))
    theta = tf.where(isotropic, 0.0, _uniform(_sub(seed, 4), shape, -math.pi, math.pi))
    beta_g = _split_uniform(_sub(seed, 5), shape, betag)
    beta_p = _split_uniform(_sub(seed, 6), shape, betap)
    families = [
        bivariate_kernels("gaussian", sigma_x, sigma_y, theta, beta_g, sizes),
        bivariate_kernels("generalized", sigma_x, sigma_y, theta, beta_g, sizes),
        bivariate_kernels("plateau", sigma_x, sigma_y, theta, beta_p, sizes),
    ]
    kernels = tf.gather(tf.stack(families, axis=1), kind // 2, axis=1, batch_dims=1)
    sinc = circular_lowpass_kernel(_sinc_cutoffs(_sub(seed, 7), sizes), sizes)
    use_sinc = _uniform(_sub(seed, 8), shape, 0.0, 1.0) < sinc_prob
    return tf.where(use_sinc[:, None, None], sinc, kernels)


def pulse_kernel(batch):
    """[B, 21, 21] identity kernels (a 1 in the centre): 'no filter' for the final sinc."""
    centre = KERNEL_SIZE // 2
    pulse = tf.scatter_nd([[centre, centre]], [1.0], [KERNEL_SIZE, KERNEL_SIZE])
    return tf.tile(pulse[None], [batch, 1, 1])


def final_sinc_kernels(seed, batch, config):
    """[B, 21, 21] final-stage kernels: with final_sinc_prob a sinc with a size from 7..21 and
    omega_c ~ U[pi/3, pi] for every size (realesrgan_dataset.py), else the pulse."""
    sizes = _random_sizes(_sub(seed, 0), batch)
    cutoff = _uniform(_sub(seed, 1), [batch], math.pi / 3, math.pi)
    sinc = circular_lowpass_kernel(cutoff, sizes)
    use_sinc = _uniform(_sub(seed, 2), [batch], 0.0, 1.0) < config.final_sinc_prob
    return tf.where(use_sinc[:, None, None], sinc, pulse_kernel(batch))


# ----------------------------------------------------------------------------- filtering


def _reflect_indices(n, pad):
    """Source indices of a reflect-padded axis (PyTorch/TF 'reflect', no edge repeat), folded
    again and again so that any pad works on any size (a 9-px image after a 0.15x resize)."""
    i = tf.range(-pad, n + pad)
    period = tf.maximum(2 * n - 2, 1)
    m = tf.math.floormod(i, period)
    return tf.where(m >= n, period - m, m)


def reflect_pad(images, pad):
    """[B, H + 2 pad, W + 2 pad, C] reflect padding of [B, H, W, C], for any H, W >= 1."""
    shape = tf.shape(images)
    images = tf.gather(images, _reflect_indices(shape[1], pad), axis=1)
    return tf.gather(images, _reflect_indices(shape[2], pad), axis=2)


_SMOOTH_LENGTHS = sorted(
    2**a * 3**b * 5**c
    for a in range(15)
    for b in range(10)
    for c in range(7)
    if 2**a * 3**b * 5**c <= 2**14
)


def _fft_length(lengths):
    """The smallest 2^a 3^b 5^c >= each of `lengths` (int32 [n]), or the length itself above
    2^14: FFTs of such sizes run at the fast radices."""
    table = tf.constant(_SMOOTH_LENGTHS, tf.int32)
    index = tf.searchsorted(table, lengths, side="left")
    smooth = tf.gather(table, tf.minimum(index, len(_SMOOTH_LENGTHS) - 1))
    return tf.where(lengths > _SMOOTH_LENGTHS[-1], lengths, smooth)


def filter2d(images, kernels):
    """Each sample's image cross-correlated with its own [k, k] kernel, reflect-padded so the
    size is kept (BasicSR's filter2D). images [B, H, W, C], kernels [B, k, k] with k odd.

    Computed as a product of 2-D FFTs of the padded image and the kernel: the circular
    convolution of the padded image equals the valid correlation on the window [k-1, k-1+H),
    with no wrap-around. On 256-px patches that is ~20x less work than a 21x21 depthwise
    convolution with per-sample filters, and it is exact up to float32 rounding. The FFT length
    is rounded up to a 5-smooth size (276 -> 288 at 256 px: 276 = 12 * 23 is ~1.4x slower); the
    extra zeros only move the wrap-around further from the window.
    """
    k = kernels.shape[-1]
    pad = k // 2
    shape = tf.shape(images)
    height, width = shape[1], shape[2]
    padded = reflect_pad(images, pad)
    channels_first = tf.transpose(padded, [0, 3, 1, 2])  # FFT runs over the last two axes
    fft_size = _fft_length(tf.shape(channels_first)[2:])
    # Convolution with the flipped kernel is correlation with the kernel.
    flipped = tf.reverse(kernels, axis=[1, 2])
    spectrum = tf.signal.rfft2d(channels_first, fft_length=fft_size)
    kernel_spectrum = tf.signal.rfft2d(flipped, fft_length=fft_size)[:, None]
    full = tf.signal.irfft2d(spectrum * kernel_spectrum, fft_length=fft_size)
    valid = full[:, :, k - 1 : k - 1 + height, k - 1 : k - 1 + width]
    return tf.ensure_shape(tf.transpose(valid, [0, 2, 3, 1]), images.shape)


def filter2d_direct(images, kernels):
    """filter2d as a per-sample depthwise convolution (the batch folded into channels): the
    reference the FFT version is checked against, and the benchmark's slow path."""
    k = kernels.shape[-1]
    padded = reflect_pad(images, k // 2)
    shape = tf.shape(padded)
    batch, channels = shape[0], images.shape[-1]
    folded = tf.reshape(tf.transpose(padded, [1, 2, 0, 3]), [1, shape[1], shape[2], -1])
    filters = tf.repeat(tf.transpose(kernels, [1, 2, 0]), channels, axis=2)[..., None]
    out = tf.nn.depthwise_conv2d(folded, filters, [1, 1, 1, 1], "VALID")
    out_shape = tf.shape(out)
    out = tf.reshape(out, [out_shape[1], out_shape[2], batch, channels])
    return tf.ensure_shape(tf.transpose(out, [2, 0, 1, 3]), images.shape)


def _gaussian_1d(size, sigma):
    ax = tf.range(size, dtype=tf.float32) - (size - 1) / 2
    kernel = tf.exp(-0.5 * (ax / sigma) ** 2)
    return kernel / tf.reduce_sum(kernel)


def _blur_matrix(n, size, sigma):
    """[n, n] matrix M with (M @ x)[i] = the reflect-padded 1-D Gaussian correlation of x at i.

    M = band @ fold: band [n, n + size - 1] holds the taps (row i at columns i..i + size - 1 of
    the padded axis), fold [n + size - 1, n] maps each padded index to its reflected source. A
    matmul, not a scatter, adds the taps that fold onto one index: scatter_nd's duplicate
    indices are summed in a nondeterministic order on GPUs.
    """
    kernel = _gaussian_1d(size, sigma)
    offset = tf.range(n + size - 1)[None, :] - tf.range(n)[:, None]
    taps = tf.gather(kernel, tf.clip_by_value(offset, 0, size - 1))
    band = tf.where((offset >= 0) & (offset < size), taps, 0.0)
    fold = tf.one_hot(_reflect_indices(n, size // 2), n, dtype=tf.float32)
    return tf.matmul(band, fold)


def _blur_rows(images, matrix):
    """matrix applied along axis 1 of [B, H, W, C]: one [H, H] x [H, B*W*C] GEMM."""
    shape = tf.shape(images)
    columns = tf.reshape(tf.transpose(images, [1, 0, 2, 3]), [shape[1], -1])
    out = tf.reshape(tf.matmul(matrix, columns), [shape[1], shape[0], shape[2], shape[3]])
    return tf.transpose(out, [1, 0, 2, 3])


def _separable_blur(images, rows, columns):
    """A separable blur, the same for every sample and channel: the two 1-D passes as GEMMs with
    the [H, H] and [W, W] _blur_matrix (reflect padding folded in). For the 51-tap USM Gaussian
    on CPU, one GEMM per axis is ~2x faster than a depthwise convolution, though it multiplies
    the zeros outside the band; it is exact up to float32 rounding (the Gaussian is separable)."""
    vertical = _blur_rows(images, rows)
    transposed = tf.transpose(vertical, [0, 2, 1, 3])
    horizontal = _blur_rows(transposed, columns)
    return tf.ensure_shape(tf.transpose(horizontal, [0, 2, 1, 3]), images.shape)


def usm_sharpen(images):
    """Unsharp masking as BasicSR's USMSharp: sharpen by half the residual against a 51x51
    Gaussian blur where the residual exceeds 10/255, blended through the blurred mask."""
    shape = tf.shape(images)
    rows = _blur_matrix(shape[1], USM_SIZE, USM_SIGMA)
    columns = _blur_matrix(shape[2], USM_SIZE, USM_SIGMA)
    blur = _separable_blur(images, rows, columns)
    residual = images - blur
    mask = tf.cast(tf.abs(residual) > USM_THRESHOLD, images.dtype)
    soft_mask = _separable_blur(mask, rows, columns)
    sharp = tf.clip_by_value(images + USM_WEIGHT * residual, 0.0, 1.0)
    return soft_mask * sharp + (1.0 - soft_mask) * images


# ----------------------------------------------------------------------------- resize, noise


def _resize(images, size, method_index):
    """tf.image.resize without antialiasing (as F.interpolate) by one of RESIZE_METHODS."""
    branches = [
        lambda m=m: tf.image.resize(images, size, method=m, antialias=False) for m in RESIZE_METHODS
    ]
    return _keep_rank(tf.switch_case(method_index, branches), images)


def _keep_rank(out, like):
    """out with like's batch and channel sizes restored (tf.cond / switch_case drop them)."""
    return tf.ensure_shape(out, [like.shape[0], None, None, like.shape[-1]])


def _resize_factor(seed, probs, value_range):
    """One factor per batch: up U[1, high], down U[low, 1] or keep 1, by probs (feed_data)."""
    direction = tf.random.stateless_categorical(
        tf.math.log([list(probs)]), 1, _sub(seed, 0), dtype=tf.int32
    )[0, 0]
    unit = _uniform(_sub(seed, 1), [], 0.0, 1.0)
    up = 1.0 + unit * (value_range[1] - 1.0)
    down = value_range[0] + unit * (1.0 - value_range[0])
    return tf.gather(tf.stack([up, down, 1.0]), direction)


def _random_method(seed):
    return tf.random.stateless_uniform([], seed, 0, len(RESIZE_METHODS), dtype=tf.int32)


def _sized(length, factor):
    """int(length * factor), at least 1."""
    return tf.maximum(tf.cast(tf.cast(length, tf.float32) * factor, tf.int32), 1)


def _by_gray(images, gray):
    """(colour samples [Nc, H, W, 3], grey samples' luma [Ng, H, W, 1], inverse permutation):
    each sample's noise is drawn only in the form it uses; `_merge_by_gray` puts them back."""
    color_index = tf.where(tf.logical_not(gray))[:, 0]
    gray_index = tf.where(gray)[:, 0]
    color = tf.gather(images, color_index)
    mono = tf.image.rgb_to_grayscale(tf.gather(images, gray_index))
    inverse = tf.math.invert_permutation(tf.concat([color_index, gray_index], 0))
    return color, mono, inverse


def _merge_by_gray(color, mono, inverse):
    """[B, H, W, 3] per-sample fields in batch order from the colour and (broadcast) grey ones."""
    mono = tf.broadcast_to(mono, tf.concat([tf.shape(mono)[:3], [3]], 0))
    return tf.gather(tf.concat([color, mono], 0), inverse)


def _draw_split(draw, color, mono):
    """One random draw (draw(flat_params)) over both groups' elements, split and reshaped back:
    a single op whose size is just the pixels that get noise."""
    flat = draw(tf.concat([tf.reshape(color, [-1]), tf.reshape(mono, [-1])], 0))
    color_size = tf.size(color)
    return (
        tf.reshape(flat[:color_size], tf.shape(color)),
        tf.reshape(flat[color_size:], tf.shape(mono)),
    )


def gaussian_noise(images, seed, sigma, gray):
    """images + N(0, sigma/255) per sample, the same field on all channels where gray; clipped.

    sigma: [B] in 1/255 units; gray: [B] bool.
    """
    color, mono, inverse = _by_gray(images, gray)
    color, mono = _draw_split(
        lambda flat: tf.random.stateless_normal(tf.shape(flat), seed), color, mono
    )
    noise = _merge_by_gray(color, mono, inverse) * (sigma / 255.0)[:, None, None, None]
    return tf.clip_by_value(images + noise, 0.0, 1.0)


def _poisson_rates(images):
    """(images rounded to 8 bits, vals [N, 1, 1, 1]) with vals = 2^ceil(log2(distinct 8-bit
    levels)) per sample (BasicSR's generate_poisson_noise_pt, after rounding to 8 bits)."""
    levels = tf.cast(tf.round(tf.clip_by_value(images, 0.0, 1.0) * 255.0), tf.int32)
    quantised = tf.cast(levels, tf.float32) / 255.0
    batch = tf.shape(images)[0]
    offsets = tf.range(batch)[:, None, None, None] * 256
    counts = tf.math.bincount(
        tf.reshape(levels + offsets, [-1]), minlength=batch * 256, maxlength=batch * 256
    )
    distinct = tf.reduce_sum(tf.cast(tf.reshape(counts, [batch, 256]) > 0, tf.float32), axis=1)
    vals = tf.pow(2.0, tf.math.ceil(tf.math.log(distinct) / math.log(2.0)))[:, None, None, None]
    return quantised, vals


def poisson_noise(images, seed, scale, gray):
    """images + scale * (Poisson(img * vals) / vals - img) per sample (grey: one residual of the
    luma on all channels); clipped. scale: [B]; gray: [B] bool.

    Poisson sampling is the costliest op of the pipeline, so it draws exactly one value per
    noisy element: 3 per pixel of a colour sample, 1 per pixel of a grey one.
    """
    color, mono, inverse = _by_gray(images, gray)
    (color, color_vals), (mono, mono_vals) = _poisson_rates(color), _poisson_rates(mono)
    drawn_color, drawn_mono = _draw_split(
        lambda lam: tf.random.stateless_poisson(tf.shape(lam), seed, lam, dtype=tf.float32),
        color * color_vals,
        mono * mono_vals,
    )
    residual = _merge_by_gray(
        drawn_color / color_vals - color, drawn_mono / mono_vals - mono, inverse
    )
    return tf.clip_by_value(images + residual * scale[:, None, None, None], 0.0, 1.0)


def _random_noise(images, seed, config, second):
    """Gaussian (probability gaussian_noise_prob, per batch) or Poisson noise, strength and
    grey-or-colour per sample."""
    suffix = "2" if second else ""
    batch = tf.shape(images)[0]
    gray = _uniform(_sub(seed, 1), [batch], 0.0, 1.0) < getattr(config, "gray_noise_prob" + suffix)
    use_gaussian = _uniform(_sub(seed, 0), [], 0.0, 1.0) < getattr(
        config, "gaussian_noise_prob" + suffix
    )
    sigma = _uniform(_sub(seed, 2), [batch], *getattr(config, "noise_range" + suffix))
    scale = _uniform(_sub(seed, 3), [batch], *getattr(config, "poisson_scale_range" + suffix))
    noisy = tf.cond(
        use_gaussian,
        lambda: gaussian_noise(images, _sub(seed, 4), sigma, gray),
        lambda: poisson_noise(images, _sub(seed, 5), scale, gray),
    )
    return _keep_rank(noisy, images)


# ----------------------------------------------------------------------------- JPEG


def _jpeg(images, quality):
    """JPEG round trip per sample at quality [B] (clamped to [0, 1] first, as feed_data), by the
    pure-TF codec of trainer/jpeg.py, so it runs on any device and inside one graph."""
    images = tf.clip_by_value(images, 0.0, 1.0)
    return jpeg.compress(images, quality)


def _random_jpeg(images, seed, value_range):
    quality = _uniform(seed, [tf.shape(images)[0]], *value_range)
    return _jpeg(images, quality)


# ----------------------------------------------------------------------------- pipeline


def degrade(hr, seed, config):
    """(lr, target) from HR patches by Real-ESRGAN's second-order degradation.

    Args:
      hr: float32 [B, H, W, 3] in [0, 1], H and W multiples of config.scale.
      seed: int32/int64 [2] stateless seed (step_seed for training).
      config: DegradationConfig.

    Returns:
      lr float32 [B, H/s, W/s, 3] in [0, 1], rounded to 1/255; target float32 [B, H, W, 3]: the
      unsharp-masked HR with config.usm_target, else hr.
    """
    hr = tf.convert_to_tensor(hr, tf.float32)
    seed = tf.convert_to_tensor(seed)
    if hr.shape.rank != 4 or hr.shape[-1] != 3:
        raise ValueError(f"hr must be [B, H, W, 3], got shape {hr.shape}.")
    scale = config.scale
    shape = tf.shape(hr)
    batch, height, width = shape[0], shape[1], shape[2]
    checks = [
        tf.debugging.assert_equal(
            (height % scale, width % scale),
            (0, 0),
            message=f"hr height and width must be multiples of scale {scale}",
        )
    ]
    with tf.control_dependencies(checks):
        sharpened = usm_sharpen(hr) if (config.usm_input or config.usm_target) else hr
    source = sharpened if config.usm_input else hr
    lr_size = tf.stack([height // scale, width // scale])

    # First degradation: blur, resize, noise, JPEG.
    out = filter2d(source, random_kernels(_sub(seed, _S_KERNEL1), batch, config))
    factor = _resize_factor(_sub(seed, _S_RESIZE1), config.resize_prob, config.resize_range)
    size = tf.stack([_sized(height, factor), _sized(width, factor)])
    out = _resize(out, size, _random_method(_sub(_sub(seed, _S_RESIZE1), 2)))
    out = _random_noise(out, _sub(seed, _S_NOISE1), config, second=False)
    out = _random_jpeg(out, _sub(seed, _S_JPEG1), config.jpeg_range)

    # Second degradation: blur (second_blur_prob, per batch), resize relative to LR, noise.
    kernels2 = random_kernels(_sub(seed, _S_KERNEL2), batch, config, second=True)
    do_blur = _uniform(_sub(seed, _S_BLUR2), [], 0.0, 1.0) < config.second_blur_prob
    out = _keep_rank(tf.cond(do_blur, lambda: filter2d(out, kernels2), lambda: out), out)
    factor = _resize_factor(_sub(seed, _S_RESIZE2), config.resize_prob2, config.resize_range2)
    size = tf.stack(
        [_sized(height // scale, factor), _sized(width // scale, factor)]
    )  # int(ori_h / scale * factor)
    out = _resize(out, size, _random_method(_sub(_sub(seed, _S_RESIZE2), 2)))
    out = _random_noise(out, _sub(seed, _S_NOISE2), config, second=True)

    # Final stage, either order with equal odds: [resize to LR + sinc] then JPEG, or the reverse.
    sinc = final_sinc_kernels(_sub(seed, _S_SINC), batch, config)
    method = _random_method(_sub(seed, _S_RESIZE3))
    quality = _uniform(_sub(seed, _S_JPEG2), [batch], *config.jpeg_range2)

    def resize_sinc(images):
        return filter2d(_resize(images, lr_size, method), sinc)

    # One JPEG in the graph (its ~700 ops are the largest block to trace and optimise), with
    # resize + sinc before or after it.
    resize_first = _uniform(_sub(seed, _S_ORDER), [], 0.0, 1.0) < 0.5
    out = _keep_rank(tf.cond(resize_first, lambda: resize_sinc(out), lambda: out), out)
    out = _jpeg(out, quality)
    out = _keep_rank(tf.cond(resize_first, lambda: out, lambda: resize_sinc(out)), out)
    lr = tf.clip_by_value(tf.round(out * 255.0), 0.0, 255.0) / 255.0
    lr = tf.ensure_shape(lr, [hr.shape[0], _div(hr.shape[1], scale), _div(hr.shape[2], scale), 3])
    target = sharpened if config.usm_target else hr
    return lr, target


def _div(length, scale):
    return None if length is None else length // scale
