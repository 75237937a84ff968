"""The ESRGAN models through the CLI in other processes: a 2-worker MultiWorkerMirroredStrategy
GAN phase (compact + U-Net spectral norm + RaGAN + EMA), and SIGTERM in a compact + EMA run
whose resumed run restores the EMA exactly. The helpers and fixtures are test_train's."""

import dataclasses
import os
import re

import numpy as np
import tensorflow as tf

from tests.trainer import test_train
from tests.trainer.test_train import (
    _checkpoint_values,
    _config,
    _restored_values,
    _saved_step,
    _train_command,
)
from trainer import config as config_lib
from trainer import generator_store, loop

# _train_command's generator size (--num_blocks=1 --channels=8) as a compact generator.
_COMPACT = config_lib.GeneratorConfig(scale=4, architecture="compact", num_blocks=1, channels=8)
_EMA_DECAY = 0.9

# test_train's fixtures, shared: its 4 train images (48x48) and their DataSource (the 2-replica
# mirrored strategy comes from tests/trainer/conftest.py).
data_dir, source = test_train.data_dir, test_train.source


def _compact_config(model_dir, ema_decay, **overrides):
    """test_train's tiny RunConfig with the compact generator and an EMA of `ema_decay`."""
    return dataclasses.replace(
        _config(model_dir, **overrides),
        generator=_COMPACT,
        optimizer=config_lib.OptimizerConfig(ema_decay=ema_decay),
    )


def _logged_losses(log, step, total):
    """The losses of the progress line `step S/T  name=value ...  lr=...` (see reporting)."""
    match = re.search(rf"step {step}/{total}  (.*?)  lr=", log)
    assert match, log[-3000:]
    return {k: float(v) for k, v in (pair.split("=") for pair in match.group(1).split())}


def _with_prefix(values, prefix):
    return {name: value for name, value in values.items() if name.startswith(prefix + "/")}


def _initial_generator(directory):
    """A freshly built compact generator's checkpoint: the GAN's start, without a pretrain run."""
    generator = generator_store.build_generator(_COMPACT)
    checkpoint = tf.train.Checkpoint(**{generator_store.GENERATOR_KEY: generator})
    return checkpoint.write(os.path.join(directory, "generator"))


def test_compact_unet_ragan_ema_gan_phase_on_two_workers(data_dir, tmp_path):
    model_dir = str(tmp_path / "model")
    command = _train_command(
        data_dir,
        model_dir,
        "--generator=compact",
        "--phase=gan",
        f"--init_checkpoint={_initial_generator(str(tmp_path / 'init'))}",
        "--strategy=multi_worker",
        "--discriminator=unet",
        "--discriminator_channels=4",
        "--gan_loss=ragan",
        f"--ema_decay={_EMA_DECAY}",
        "--perceptual_network=vgg19",
        "--perceptual_layers=conv1_2:1",
        "--perceptual_weights=none",
        "--train_steps=2",
        "--steps_per_loop=2",
        "--checkpoint_steps=2",
        "--log_steps=2",
    )
    logs = test_train.run_two_workers(command)

    for log in logs:
        assert "stopped at step 2/2" in log
        losses = _logged_losses(log, 2, 2)
        assert {"content_loss", "adversarial_loss", "d_loss"} <= set(losses), losses
        assert all(np.isfinite(v) for v in losses.values()), losses
    phase_dir = os.path.join(model_dir, "gan")
    prefix = tf.train.latest_checkpoint(phase_dir)
    assert _saved_step(prefix) == 2 and prefix.endswith("ckpt-2")
    assert not os.path.exists(os.path.join(phase_dir, ".tmp_workers"))  # worker copies removed
    values = _checkpoint_values(prefix)
    average, _, _ = generator_store.load_generator(model_dir)  # the EMA by default
    raw, _, _ = generator_store.load_generator(model_dir, weights="raw")
    assert (average.restored_weights, raw.restored_weights) == ("ema", "raw")
    # The EMA is saved variable for variable under its own key, and moved away from the weights.
    ema = [v for n, v in values.items() if n.startswith(generator_store.EMA_KEY + "/")]
    assert sorted(v.shape for v in ema) == sorted(tuple(w.shape) for w in raw.weights)
    assert any(
        not np.array_equal(a.numpy(), r.numpy())
        for a, r in zip(average.weights, raw.weights, strict=True)
    )
    # The U-Net's 8 spectral-norm power-iteration vectors, saved once each, unit length.
    sn_u = {n: v for n, v in values.items() if n.startswith("discriminator/") and "sn_u" in n}
    assert len(sn_u) == 8, sorted(values)
    for name, vector in sn_u.items():
        np.testing.assert_allclose(np.linalg.norm(vector), 1.0, rtol=1e-3, err_msg=name)
    assert all(np.all(np.isfinite(v)) for v in values.values() if v.dtype.kind == "f")


def test_sigterm_in_a_compact_ema_run_saves_the_ema_and_resumes_it_exactly(
    data_dir, source, strategy, tmp_path
):
    model_dir = str(tmp_path / "model")
    prefix, log = test_train.sigterm_at_step_3(
        data_dir, model_dir, "--generator=compact", f"--ema_decay={_EMA_DECAY}"
    )
    stopped_at = _saved_step(prefix)
    assert stopped_at >= 3 and f"stopped at step {stopped_at}/100000" in "".join(log)
    saved = _checkpoint_values(prefix)
    saved_ema = _with_prefix(saved, generator_store.EMA_KEY)
    assert saved_ema and generator_store.checkpoint_has_ema(prefix)
    average, _, _ = generator_store.load_generator(model_dir, weights="ema")
    raw, _, _ = generator_store.load_generator(model_dir, weights="raw")
    assert any(  # a real average, so restarting it from the weights would show
        not np.array_equal(a.numpy(), r.numpy())
        for a, r in zip(average.weights, raw.weights, strict=True)
    )

    config = _compact_config(model_dir, _EMA_DECAY, train_steps=stopped_at + 2, steps_per_loop=1)
    controller = loop.build_controller(config, source, strategy)
    assert controller.state.step() == stopped_at
    for ours, before in zip(controller.state.ema_generator.weights, average.weights, strict=True):
        np.testing.assert_array_equal(ours.numpy(), before.numpy())  # before any new step
    restored = _restored_values(controller)
    for name, value in saved.items():  # the EMA, the weights, Adam's moments, the step
        np.testing.assert_array_equal(restored[name], value, err_msg=name)
    controller.run()
    resumed_prefix = tf.train.latest_checkpoint(os.path.join(model_dir, "pretrain"))
    assert _saved_step(resumed_prefix) == stopped_at + 2
    resumed = _checkpoint_values(resumed_prefix)
    assert any(not np.array_equal(resumed[n], v) for n, v in saved_ema.items())  # it went on
