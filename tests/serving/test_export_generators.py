"""Every generator architecture through the export: in-graph tiling with the per-architecture
default overlap equals the untiled output, the EMA / raw weights, ESRGAN network interpolation."""

import os

import numpy as np
import pytest
import tensorflow as tf

from serving import contract, export_lib, versions
from tests.fixtures import make_image
from tests.serving.conftest import generator_uint8, run_module
from trainer import config as config_lib
from trainer import ema, generator_store

TINY = {
    "srresnet": config_lib.GeneratorConfig(scale=4, num_blocks=1, channels=8),
    "rrdb": config_lib.GeneratorConfig(
        scale=4, architecture="rrdb", num_blocks=1, channels=8, growth=4
    ),
    "compact": config_lib.GeneratorConfig(
        scale=4, architecture="compact", num_blocks=2, channels=8
    ),
}


def _perturb(generator, seed):
    # Trained-looking weights: biases and PReLU slopes away from their zero/constant start.
    rng = np.random.default_rng(seed)
    for weight in generator.weights:
        weight.assign(weight.numpy() + rng.normal(0.0, 0.05, weight.shape).astype(np.float32))


def _save(model_dir, config, phase, seed, with_ema=False):
    """A trainer-like checkpoint of `config` under MODEL_DIR/<phase>; returns the generator(s)."""
    generator = generator_store.build_generator(config)
    _perturb(generator, seed)
    objects = {generator_store.GENERATOR_KEY: generator}
    average = None
    if with_ema:
        average = generator_store.build_generator(config)
        ema.copy(average, generator)
        _perturb(average, seed + 100)
        objects[ema.EMA_KEY] = average
    generator_store.write_config(model_dir, config)
    tf.train.CheckpointManager(
        tf.train.Checkpoint(**objects), generator_store.phase_dir(model_dir, phase), 2
    ).save()
    return generator, average


@pytest.mark.parametrize("architecture", sorted(TINY))
def test_each_generator_exports_and_tiles_like_its_untiled_output(tmp_path, architecture):
    config = TINY[architecture]
    model_dir, base = str(tmp_path / "model"), str(tmp_path / "exported")
    raw, average = _save(model_dir, config, config_lib.PRETRAIN, seed=1, with_ema=True)
    export_dir, source = export_lib.export_from_model_dir(
        model_dir, base, "m", tile_size=16, max_input_pixels=100 * 100
    )
    metadata = versions.read_metadata(export_dir)
    overlap = export_lib.default_overlap(config)
    assert metadata["tiling"]["overlap"] == overlap and "(ema)" in source
    assert metadata["generator"]["architecture"] == architecture
    radius = generator_store.receptive_radius(config)
    assert overlap == (16 if architecture == "srresnet" else int(np.ceil(radius)) + 1)
    loaded = tf.saved_model.load(export_dir)
    lr = make_image(37, 21, seed=3)[np.newaxis]  # 3 x 2 tiles of 16, ragged edges
    tiled = loaded.signatures[contract.TENSOR_SIGNATURE](lr_image=tf.constant(lr))
    tiled = tiled[contract.TENSOR_OUTPUT].numpy().astype(int)
    assert tiled.shape == (1, 37 * 4, 21 * 4, 3)
    assert np.abs(tiled - generator_uint8(average, lr)).max() <= 1  # the EMA, not the raw
    assert np.abs(tiled - generator_uint8(raw, lr)).max() > 1


def test_network_interpolation_reproduces_both_models_at_alpha_0_and_1(tmp_path):
    config = TINY["rrdb"]
    model_dir = str(tmp_path / "model")
    psnr, _ = _save(model_dir, config, config_lib.PRETRAIN, seed=1)
    gan, _ = _save(model_dir, config, config_lib.GAN, seed=2)
    lr = make_image(12, 10, seed=4)[np.newaxis]
    for alpha, expected in ((0.0, psnr), (1.0, gan)):
        blended, _, source = export_lib.load_export_generator(model_dir, None, model_dir, alpha)
        np.testing.assert_array_equal(generator_uint8(blended, lr), generator_uint8(expected, lr))
        assert "pretrain/ckpt-1" in source and "gan/ckpt-1" in source
    blended, _, _ = export_lib.load_export_generator(model_dir, "raw", model_dir, 0.8)
    for mixed, g, p in zip(blended.weights, gan.weights, psnr.weights, strict=True):
        np.testing.assert_allclose(mixed.numpy(), 0.8 * g.numpy() + 0.2 * p.numpy(), atol=1e-6)

    other = str(tmp_path / "other")
    _save(other, TINY["compact"], config_lib.PRETRAIN, seed=3)
    with pytest.raises(ValueError, match="same GeneratorConfig"):
        export_lib.load_export_generator(model_dir, None, other, 0.5)
    with pytest.raises(ValueError, match=r"alpha must be in \[0, 1\]"):
        export_lib.load_export_generator(model_dir, None, model_dir, 1.5)
    with pytest.raises(ValueError, match="needs --interpolate_checkpoint"):
        export_lib.load_export_generator(model_dir, None, None, 0.5)
    with pytest.raises(ValueError, match="holds no generator EMA"):
        export_lib.load_export_generator(model_dir, "ema")
    # The CLI: an interpolated export.
    base = str(tmp_path / "exported")
    result = run_module(
        "serving.export",
        f"--model_dir={model_dir}",
        f"--export_base={base}",
        f"--interpolate_checkpoint={model_dir}",
        "--alpha=0.8",
    )
    assert result.returncode == 0, result.stderr[-2000:]
    assert "0.8 * " in result.stdout and os.path.isdir(os.path.join(base, "srgan", "1"))
