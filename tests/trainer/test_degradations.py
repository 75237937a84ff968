"""Real-ESRGAN degradation: reproducible seeds, shapes and ranges per scale, kernels, noise
strength, unsharp masking, graph mode with an unknown batch, and the two scripts."""

import os
import subprocess
import sys

import numpy as np
import pytest
import tensorflow as tf
from PIL import Image

from tests import fixtures
from trainer import degradations as deg
from trainer import realworld_set

CONFIG = deg.DegradationConfig()
SEED = tf.constant([7, 11], tf.int64)


def _hr(batch=2, size=32, seed=0):
    return tf.constant(
        np.stack([fixtures.make_image(size, size, seed=seed + i) for i in range(batch)]) / 255.0,
        tf.float32,
    )


def _high_frequency_energy(images):
    """Mean squared Laplacian: larger for sharper images."""
    laplacian = (
        4 * images[:, 1:-1, 1:-1]
        - images[:, :-2, 1:-1]
        - images[:, 2:, 1:-1]
        - images[:, 1:-1, :-2]
        - images[:, 1:-1, 2:]
    )
    return float(tf.reduce_mean(laplacian**2))


def test_same_seed_same_output_and_step_replica_change_it():
    hr = _hr()
    lr_a, target_a = deg.degrade(hr, deg.step_seed(3, 10, 0), CONFIG)
    lr_b, target_b = deg.degrade(hr, deg.step_seed(3, 10, 0), CONFIG)
    np.testing.assert_array_equal(lr_a.numpy(), lr_b.numpy())
    np.testing.assert_array_equal(target_a.numpy(), target_b.numpy())
    seeds = {
        tuple(deg.step_seed(s, step, r).numpy())
        for s, step, r in ((3, 10, 0), (3, 11, 0), (3, 10, 1), (4, 10, 0))
    }
    assert len(seeds) == 4
    lr_replica, _ = deg.degrade(hr, deg.step_seed(3, 10, 1), CONFIG)
    assert not np.array_equal(lr_a.numpy(), lr_replica.numpy())


@pytest.mark.parametrize("scale, size", [(2, 32), (3, 24), (4, 32), (8, 32)])
def test_shapes_and_range_per_scale(scale, size):
    hr = _hr(batch=2, size=size)
    config = deg.DegradationConfig(scale=scale, usm_target=False)
    lr, target = deg.degrade(hr, SEED, config)
    assert lr.shape == (2, size // scale, size // scale, 3)
    np.testing.assert_array_equal(target.numpy(), hr.numpy())
    lr = lr.numpy()
    assert lr.min() >= 0.0 and lr.max() <= 1.0
    np.testing.assert_allclose(lr * 255.0, np.round(lr * 255.0), atol=1e-4)  # on the 1/255 grid


def test_bad_inputs_raise_clear_errors():
    with pytest.raises(ValueError, match="scale"):
        deg.DegradationConfig(scale=5)
    with pytest.raises(ValueError, match="kernel_prob"):
        deg.DegradationConfig(kernel_prob=(0.5, 0.5, 0.5, 0, 0, 0))
    with pytest.raises(ValueError, match="jpeg_range"):
        deg.DegradationConfig(jpeg_range=(30, 120))
    with pytest.raises(ValueError, match="resize_range"):
        deg.DegradationConfig(resize_range=(1.2, 1.5))
    with pytest.raises(tf.errors.InvalidArgumentError, match="multiples of scale"):
        deg.degrade(_hr(batch=1, size=30), SEED, CONFIG)


def test_random_kernels_sum_to_one_and_are_symmetric():
    for second in (False, True):
        kernels = deg.random_kernels(SEED, 64, CONFIG, second=second).numpy()
        assert kernels.shape == (64, 21, 21)
        np.testing.assert_allclose(kernels.sum(axis=(1, 2)), 1.0, atol=1e-5)
        # Every family is point-symmetric: k(-x) = k(x).
        np.testing.assert_allclose(kernels, kernels[:, ::-1, ::-1], atol=1e-7)
    sinc = deg.final_sinc_kernels(SEED, 16, CONFIG).numpy()
    np.testing.assert_allclose(sinc.sum(axis=(1, 2)), 1.0, atol=1e-5)


@pytest.mark.parametrize("family", ["gaussian", "generalized", "plateau"])
def test_each_family_sums_to_one_iso_is_mirror_symmetric(family):
    ones = tf.ones([2])
    sizes = tf.constant([7, 21])
    iso = deg.bivariate_kernels(family, 2 * ones, 2 * ones, 0 * ones, 1.5 * ones, sizes).numpy()
    np.testing.assert_allclose(iso.sum(axis=(1, 2)), 1.0, atol=1e-5)
    np.testing.assert_allclose(iso, iso[:, ::-1], atol=1e-7)
    np.testing.assert_allclose(iso, np.transpose(iso, (0, 2, 1)), atol=1e-7)
    assert np.all(iso[0, :7] == 0) and np.all(iso[0, :, 14:] == 0)  # a 7x7 kernel padded to 21
    aniso = deg.bivariate_kernels(family, 3 * ones, ones, 0.5 * ones, 1.5 * ones, sizes).numpy()
    np.testing.assert_allclose(aniso.sum(axis=(1, 2)), 1.0, atol=1e-5)
    assert not np.allclose(aniso[1], aniso[1].T, atol=1e-4)  # rotated, stretched
    sinc = deg.circular_lowpass_kernel(tf.constant([1.0, 2.0]), sizes).numpy()
    np.testing.assert_allclose(sinc.sum(axis=(1, 2)), 1.0, atol=1e-5)
    np.testing.assert_allclose(sinc, np.transpose(sinc, (0, 2, 1)), atol=1e-7)


def test_fft_filter_equals_direct_convolution_with_reflect_padding():
    hr = _hr(batch=3, size=32)
    kernels = deg.random_kernels(SEED, 3, CONFIG)
    np.testing.assert_allclose(
        deg.filter2d(hr, kernels).numpy(), deg.filter2d_direct(hr, kernels).numpy(), atol=2e-6
    )
    padded = tf.pad(hr, [[0, 0], [10, 10], [10, 10], [0, 0]], mode="REFLECT")
    np.testing.assert_array_equal(deg.reflect_pad(hr, 10).numpy(), padded.numpy())
    tiny = deg.filter2d(hr[:, :5, :3], kernels)  # pad 10 on a 5x3 image still works
    assert tiny.shape == (3, 5, 3, 3)


def _separable_blur_direct(images, size, sigma):
    """The USM blur as two 1-D depthwise convolutions: the reference for the GEMMs."""
    channels = images.shape[-1]
    kernel = deg._gaussian_1d(size, sigma)
    padded = deg.reflect_pad(images, size // 2)
    rows = tf.tile(kernel[:, None, None, None], [1, 1, channels, 1])
    cols = tf.tile(kernel[None, :, None, None], [1, 1, channels, 1])
    out = tf.nn.depthwise_conv2d(padded, rows, [1, 1, 1, 1], "VALID")
    return tf.nn.depthwise_conv2d(out, cols, [1, 1, 1, 1], "VALID")


@pytest.mark.parametrize("height, width", [(32, 24), (5, 3)])
def test_usm_blur_as_gemm_equals_depthwise_convolution(height, width):
    hr = _hr(batch=2, size=32)[:, :height, :width]  # 5x3: the 25-px reflection folds repeatedly
    rows = deg._blur_matrix(height, deg.USM_SIZE, deg.USM_SIGMA)
    columns = deg._blur_matrix(width, deg.USM_SIZE, deg.USM_SIGMA)
    np.testing.assert_allclose(
        deg._separable_blur(hr, rows, columns).numpy(),
        _separable_blur_direct(hr, deg.USM_SIZE, deg.USM_SIGMA).numpy(),
        atol=1e-6,
    )
    np.testing.assert_allclose(tf.reduce_sum(rows, axis=1).numpy(), 1.0, atol=1e-6)


def test_noise_strength_grows_with_its_parameter_and_gray_noise_is_gray():
    flat = tf.fill([4, 48, 48, 3], 0.5)
    gray = tf.constant([False, False, True, True])
    gaussian = deg.gaussian_noise(flat, SEED, tf.constant([2.0, 20.0, 2.0, 20.0]), gray) - flat
    std = tf.math.reduce_std(gaussian, axis=[1, 2, 3]).numpy() * 255
    assert std[1] > 5 * std[0] and std[3] > 5 * std[2]
    np.testing.assert_allclose(std, [2, 20, 2, 20], rtol=0.1)
    ramp = tf.tile(tf.linspace(0.2, 0.8, 48)[None, :, None, None], [4, 48, 1, 3])
    poisson = deg.poisson_noise(ramp, SEED, tf.constant([0.2, 2.0, 0.2, 2.0]), gray) - ramp
    std = tf.math.reduce_std(poisson, axis=[1, 2, 3]).numpy()
    assert std[1] > 5 * std[0] and std[3] > 5 * std[2]
    for noise in (gaussian, poisson):
        noise = noise.numpy()
        np.testing.assert_array_equal(noise[2:, ..., 0], noise[2:, ..., 1])
        np.testing.assert_array_equal(noise[2:, ..., 0], noise[2:, ..., 2])
        assert not np.array_equal(noise[:2, ..., 0], noise[:2, ..., 1])


def test_usm_target_is_sharper_than_hr():
    hr = _hr()
    _, target = deg.degrade(hr, SEED, deg.DegradationConfig(usm_target=True))
    assert target.numpy().min() >= 0.0 and target.numpy().max() <= 1.0
    assert _high_frequency_energy(target) > 1.1 * _high_frequency_energy(hr)


def test_graph_mode_with_unknown_batch_matches_eager():
    degrade = tf.function(
        lambda hr, seed: deg.degrade(hr, seed, CONFIG),
        autograph=False,  # no tensor-dependent Python control flow: skip the conversion
        input_signature=[
            tf.TensorSpec([None, 32, 32, 3], tf.float32),
            tf.TensorSpec([2], tf.int64),
        ],
    )
    hr = _hr()
    lr, target = degrade(hr, SEED)
    assert degrade.get_concrete_function().structured_outputs[0].shape.as_list() == [
        None,
        8,
        8,
        3,
    ]
    again, _ = degrade(hr, SEED)
    np.testing.assert_array_equal(lr.numpy(), again.numpy())
    # Eager agrees to the last bit of the /255 (graph mode may divide by multiplying).
    eager, _ = deg.degrade(hr, SEED, CONFIG)
    np.testing.assert_allclose(lr.numpy(), eager.numpy(), rtol=0, atol=1e-7)
    assert target.shape == hr.shape


@pytest.fixture(scope="module", name="scripts")
def _scripts(tmp_path_factory):
    """Both scripts started at once on tiny inputs: each run is mostly TensorFlow's import, so
    on two cores they overlap. Yields {module: (process, folder of its inputs and outputs)}."""
    started = {}
    realworld = tmp_path_factory.mktemp("realworld")
    hr_dir = realworld / "hr"
    hr_dir.mkdir()
    Image.fromarray(fixtures.make_image(26, 34, seed=1)).save(hr_dir / "a_HR.png")
    Image.fromarray(fixtures.make_image(20, 20, seed=2)).save(hr_dir / "b.png")
    Image.fromarray(fixtures.make_image(5, 5, seed=2)).save(hr_dir / "b_LR.png")  # skipped
    args = [f"--hr_dir={hr_dir}", f"--output_dir={realworld / 'out'}", "--seed=0"]
    started["trainer.realworld_set"] = (args, realworld)
    samples = tmp_path_factory.mktemp("samples")
    Image.fromarray(fixtures.make_image(20, 28, seed=3)).save(samples / "photo.png")
    args = [f"--image={samples / 'photo.png'}", f"--output={samples / 'grid.png'}", "--num=2"]
    started["trainer.degradation_samples"] = (args, samples)
    processes = {
        module: (
            subprocess.Popen(
                [sys.executable, "-m", module, *args],
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
            ),
            folder,
        )
        for module, (args, folder) in started.items()
    }
    yield processes
    for process, _ in processes.values():
        process.kill()
        process.communicate()


def _finished(scripts, module):
    """The folder of `module`'s run, after checking it exited 0 and quietly."""
    process, folder = scripts[module]
    _, stderr = process.communicate(timeout=240)
    assert process.returncode == 0, stderr[-2000:]
    assert stderr == ""  # quiet: no TensorFlow start-up lines
    return folder


def test_realworld_set_writes_evaluator_pairs_reproducibly(scripts):
    folder = _finished(scripts, "trainer.realworld_set")
    out = folder / "out"
    assert sorted(os.listdir(out)) == ["a_HR.png", "a_LR.png", "b_HR.png", "b_LR.png"]
    for key, (h, w) in (("a", (24, 32)), ("b", (20, 20))):
        assert Image.open(out / f"{key}_HR.png").size == (w, h)
        assert Image.open(out / f"{key}_LR.png").size == (w // 4, h // 4)
    again = folder / "again"
    realworld_set.write_set(str(folder / "hr"), str(again), 0, 4)  # the same rule, in-process
    for name in os.listdir(out):
        assert (out / name).read_bytes() == (again / name).read_bytes(), name


def test_degradation_samples_writes_a_grid(scripts):
    folder = _finished(scripts, "trainer.degradation_samples")
    # 2 rows of 20 px with a 4-px gap; 2 panels of 28 px with a 4-px gap.
    assert Image.open(folder / "grid.png").size == (2 * 28 + 4, 2 * 20 + 4)
