"""The training loop and CLI on a tiny dataset: 2-replica MirroredStrategy (conftest splits the
CPU), checkpoints, summaries, resume, the GAN phase's start, SIGTERM, non-finite losses, a x3
dataset, the manifest read once, and a 2-process MultiWorkerMirroredStrategy run."""

import glob
import json
import os
import shutil
import signal
import socket
import subprocess
import sys

import numpy as np
import pytest
import tensorflow as tf
from PIL import Image

from data_prep import schema
from tests import fixtures
from trainer import config as config_lib
from trainer import generator_store, input_pipeline, loop

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
    out = str(tmp_path_factory.mktemp("data"))
    fixtures.write_dataset(
        out,
        {
            "train": [(f"t{i}", fixtures.make_image(48, 48, seed=i)) for i in range(4)],
            "validation": [(f"v{i}", fixtures.make_image(32, 48, seed=10 + i)) for i in range(2)],
        },
    )
    return out


@pytest.fixture(scope="module")
def source(data_dir):
    return input_pipeline.open_dataset(data_dir)


def _config(
    model_dir,
    phase=config_lib.PRETRAIN,
    train_steps=4,
    steps_per_loop=2,
    checkpoint_steps=2,
    eval_steps=0,
    image_steps=0,
    learning_rates=(1e-4,),
    replay_input_on_resume=False,
    scale=4,
    hr_patch_size=32,
):
    """A tiny RunConfig: 1-block 8-channel generator, batch 4, 32-px HR patches, seeded."""
    return config_lib.RunConfig(
        model_dir=model_dir,
        generator=config_lib.GeneratorConfig(scale=scale, num_blocks=1, channels=8),
        step=config_lib.StepConfig(
            phase=phase,
            xla="off",
            steps_per_loop=steps_per_loop,
            loss=config_lib.LossConfig(perceptual_weights="none"),
        ),
        input=config_lib.InputConfig(
            hr_patch_size=hr_patch_size, global_batch_size=4, crops_per_image=2, shuffle_buffer=8
        ),
        schedule=config_lib.ScheduleConfig(train_steps=train_steps, learning_rates=learning_rates),
        reporting=config_lib.ReportingConfig(
            checkpoint_steps=checkpoint_steps,
            log_steps=2,
            eval_steps=eval_steps,
            image_steps=image_steps,
        ),
        seed=0,
        replay_input_on_resume=replay_input_on_resume,
    )


@pytest.fixture(scope="module")
def pretrained(data_dir, strategy, tmp_path_factory):
    """A model_dir after 4 pretrain steps with validation and images at step 4.

    The run reads its own copy of the dataset, whose manifest.json is deleted once opened: it
    trains, validates and draws grids from the Manifest read once, never from the directory.
    """
    copy = str(tmp_path_factory.mktemp("data_copy") / "data")
    shutil.copytree(data_dir, copy)
    source = input_pipeline.open_dataset(copy)
    os.remove(schema.manifest_path(copy))
    model_dir = str(tmp_path_factory.mktemp("model"))
    step, metrics = loop.train(_config(model_dir, eval_steps=4, image_steps=4), source, strategy)
    assert step == 4 and np.isfinite(metrics["pixel_loss"])
    return model_dir


def _checkpoint_values(prefix):
    reader = tf.train.load_checkpoint(prefix)
    return {
        name: reader.get_tensor(name)
        for name, _ in tf.train.list_variables(prefix)
        if not name.startswith("_CHECKPOINTABLE_OBJECT_GRAPH")
    }


def _saved_step(prefix):
    values = _checkpoint_values(prefix)
    return int(next(v for k, v in values.items() if k.startswith("global_step/")))


def _summary_tags(directory):
    tags = set()
    for path in glob.glob(os.path.join(directory, "*", "events.out.tfevents.*")):
        for event in tf.compat.v1.train.summary_iterator(path):
            tags.update(value.tag for value in event.summary.value)
    return tags


def _restored_values(controller):
    """The controller's variables, in the checkpoint's naming, as numpy arrays."""
    prefix = os.path.join(controller.manager.directory, "restored_copy")
    return _checkpoint_values(controller.checkpoint.write(prefix))


def test_pretrain_writes_checkpoints_step_summaries_and_images(pretrained):
    phase_dir = os.path.join(pretrained, "pretrain")
    assert tf.train.latest_checkpoint(phase_dir).endswith("ckpt-4")
    assert _saved_step(os.path.join(phase_dir, "ckpt-2")) == 2
    assert _saved_step(os.path.join(phase_dir, "ckpt-4")) == 4
    tags = _summary_tags(os.path.join(phase_dir, "summaries"))
    assert {
        "loss/pixel_loss",
        "learning_rate",
        "steps_per_second",
        "validation/psnr",
        "validation/bicubic_psnr",
        "validation/ssim",
        "lr_bicubic_sr_hr",
    } <= tags
    grid = np.asarray(Image.open(os.path.join(phase_dir, "images", "step_00000004.png")))
    # 2 validation images cropped to 32x32 HR (their smallest side): 2 rows, 4 columns.
    assert grid.shape == (64, 128, 3)
    generator, config, _ = generator_store.load_generator(pretrained)
    assert (config.scale, config.num_blocks, config.channels) == (4, 1, 8)


def test_gan_starts_from_pretrain_generator_then_resumes_its_own(pretrained, source, strategy):
    model_dir = pretrained
    controller = loop.build_controller(
        _config(model_dir, phase=config_lib.GAN, train_steps=2), source, strategy
    )
    pretrain_generator, _, _ = generator_store.load_generator(
        os.path.join(model_dir, "pretrain", "ckpt-4")
    )
    for ours, theirs in zip(
        controller.state.generator.weights, pretrain_generator.weights, strict=True
    ):
        np.testing.assert_array_equal(ours.numpy(), theirs.numpy())
    assert controller.state.step() == 0
    metrics = controller.run()
    assert set(metrics) == {
        "g_loss",
        "content_loss",
        "adversarial_loss",
        "pixel_loss",
        "d_loss",
        "d_real",
        "d_fake",
    }
    gan_prefix = tf.train.latest_checkpoint(os.path.join(model_dir, "gan"))
    assert gan_prefix.endswith("ckpt-2")
    names = set(_checkpoint_values(gan_prefix))
    assert any(n.startswith("discriminator/") for n in names)
    assert any(n.startswith("d_optimizer/") for n in names)
    resumed = loop.build_controller(
        _config(model_dir, phase=config_lib.GAN, train_steps=4), source, strategy
    )
    assert resumed.state.step() == 2
    saved = _checkpoint_values(gan_prefix)
    restored = _restored_values(resumed)
    for name, value in saved.items():
        np.testing.assert_array_equal(restored[name], value, err_msg=name)


def test_resume_restores_identical_state_and_continues_to_the_total(
    pretrained, source, strategy, tmp_path
):
    model_dir = str(tmp_path / "model")
    shutil.copytree(pretrained, model_dir, ignore=shutil.ignore_patterns("gan"))
    saved = _checkpoint_values(os.path.join(model_dir, "pretrain", "ckpt-4"))
    controller = loop.build_controller(_config(model_dir, train_steps=6), source, strategy)
    assert controller.state.step() == 4
    restored = _restored_values(controller)
    assert set(saved) <= set(restored)
    for name, value in saved.items():  # weights, BN statistics, Adam moments and iterations
        np.testing.assert_array_equal(restored[name], value, err_msg=name)
    controller.run()
    assert controller.state.step() == 6
    assert tf.train.latest_checkpoint(os.path.join(model_dir, "pretrain")).endswith("ckpt-6")


def test_interrupted_run_with_input_replay_matches_the_uninterrupted_run(
    source, strategy, tmp_path
):
    def run(model_dir, train_steps):
        config = _config(str(model_dir), train_steps=train_steps, replay_input_on_resume=True)
        loop.train(config, source, strategy)
        return _checkpoint_values(tf.train.latest_checkpoint(os.path.join(model_dir, "pretrain")))

    uninterrupted = run(tmp_path / "uninterrupted", 4)
    run(tmp_path / "interrupted", 2)
    resumed = run(tmp_path / "interrupted", 4)
    assert set(resumed) == set(uninterrupted)
    for name, value in uninterrupted.items():
        np.testing.assert_allclose(resumed[name], value, rtol=1e-5, atol=1e-6, err_msg=name)


def test_non_finite_loss_stops_without_saving(pretrained, source, strategy, tmp_path):
    model_dir = str(tmp_path / "model")
    shutil.copytree(pretrained, model_dir, ignore=shutil.ignore_patterns("gan"))
    prefix = os.path.join(model_dir, "pretrain", "ckpt-4")
    before = _checkpoint_values(prefix)
    # A NaN learning rate: the first update poisons the weights, the next loss is NaN.
    diverging = _config(
        model_dir,
        train_steps=10,
        steps_per_loop=1,
        checkpoint_steps=100,
        learning_rates=(float("nan"),),
    )
    with pytest.raises(loop.NonFiniteLossError, match=r"Non-finite loss at step 6.*ckpt-4"):
        loop.train(diverging, source, strategy)
    assert tf.train.latest_checkpoint(os.path.join(model_dir, "pretrain")) == prefix
    after = _checkpoint_values(prefix)
    for name, value in before.items():
        np.testing.assert_array_equal(after[name], value, err_msg=name)


def _train_command(data_dir, model_dir, *extra):
    return [
        sys.executable,
        "-m",
        "trainer.train",
        f"--data_dir={data_dir}",
        f"--model_dir={model_dir}",
        "--phase=pretrain",
        "--batch_size=4",
        "--hr_patch_size=32",
        "--num_blocks=1",
        "--channels=8",
        "--crops_per_image=2",
        "--shuffle_buffer=8",
        "--seed=0",
        "--xla=off",
        *extra,
    ]


def _env(**extra):
    return {**os.environ, "PYTHONPATH": REPO, "TF_CPP_MIN_LOG_LEVEL": "2", **extra}


def sigterm_at_step_3(data_dir, model_dir, *flags):
    """Starts a 2-replica pretrain run, sends SIGTERM once step 3 is logged; (checkpoint, log)."""
    command = _train_command(
        data_dir,
        model_dir,
        *flags,
        "--strategy=mirrored",
        "--num_cpu_replicas=2",
        "--train_steps=100000",
        "--checkpoint_steps=100000",
        "--log_steps=1",
    )
    process = subprocess.Popen(
        command, cwd=REPO, env=_env(), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True
    )
    log = []
    for line in process.stderr:
        log.append(line)
        if "step 3/100000" in line:
            process.send_signal(signal.SIGTERM)
            break
    log.extend(process.stderr)
    assert process.wait(timeout=120) == 0, "".join(log[-30:])
    prefix = tf.train.latest_checkpoint(os.path.join(model_dir, "pretrain"))
    assert prefix is not None, "".join(log[-30:])
    return prefix, log


def test_sigterm_saves_a_checkpoint_and_exits_cleanly_then_resumes(
    data_dir, source, strategy, tmp_path
):
    model_dir = str(tmp_path / "model")
    prefix, log = sigterm_at_step_3(data_dir, model_dir)
    stopped_at = _saved_step(prefix)
    assert stopped_at >= 3 and prefix.endswith(f"ckpt-{stopped_at}")
    assert f"stopped at step {stopped_at}/100000" in "".join(log)
    config = _config(model_dir, train_steps=stopped_at + 2, steps_per_loop=1)
    controller = loop.build_controller(config, source, strategy)
    assert controller.state.step() == stopped_at
    controller.run()
    assert _saved_step(tf.train.latest_checkpoint(os.path.join(model_dir, "pretrain"))) == (
        stopped_at + 2
    )


def test_a_x3_dataset_trains_and_its_generator_upscales_x3(strategy, tmp_path):
    data_dir, model_dir = str(tmp_path / "data"), str(tmp_path / "model")
    images = [(f"t{i}", fixtures.make_image(48, 48, seed=i)) for i in range(2)]
    fixtures.write_dataset(data_dir, {"train": images}, scale=3)
    source = input_pipeline.open_dataset(data_dir)
    with pytest.raises(ValueError, match="configured for x4; the dataset .* is x3"):
        loop.build_controller(_config(model_dir), source, strategy)

    config = _config(model_dir, train_steps=2, scale=3, hr_patch_size=24)
    step, metrics = loop.train(config, source, strategy)

    assert step == 2 and np.isfinite(metrics["pixel_loss"])
    generator, generator_config, prefix = generator_store.load_generator(model_dir)
    assert generator_config.scale == 3 and prefix.endswith("ckpt-2")
    assert generator(np.zeros([1, 5, 6, 3], np.float32)).shape == (1, 15, 18, 3)


def _free_ports(count):
    sockets = [socket.socket() for _ in range(count)]
    for s in sockets:
        s.bind(("127.0.0.1", 0))
    ports = [s.getsockname()[1] for s in sockets]
    for s in sockets:
        s.close()
    return ports


def run_two_workers(command):
    """Runs `command` as worker 0 (the chief) and worker 1 of a local cluster; their stderr."""
    cluster = {"worker": [f"127.0.0.1:{port}" for port in _free_ports(2)]}
    workers = [
        subprocess.Popen(
            command,
            cwd=REPO,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
            env=_env(
                TF_CONFIG=json.dumps({"cluster": cluster, "task": {"type": "worker", "index": i}})
            ),
        )
        for i in range(2)
    ]
    try:
        logs = [w.communicate(timeout=150)[1] for w in workers]
    finally:
        for w in workers:
            if w.poll() is None:
                w.kill()
    for worker, log in zip(workers, logs, strict=True):
        assert worker.returncode == 0, log[-3000:]
    return logs


def test_multi_worker_mirrored_strategy_with_two_local_workers(data_dir, tmp_path):
    model_dir = str(tmp_path / "model")
    command = _train_command(
        data_dir,
        model_dir,
        "--strategy=multi_worker",
        "--train_steps=4",
        "--checkpoint_steps=2",
        "--log_steps=2",
        "--steps_per_loop=2",
    )
    for log in run_two_workers(command):
        assert "stopped at step 4/4" in log
    phase_dir = os.path.join(model_dir, "pretrain")
    assert _saved_step(tf.train.latest_checkpoint(phase_dir)) == 4
    assert not os.path.exists(os.path.join(phase_dir, ".tmp_workers"))  # worker copies removed
    generator, _, _ = generator_store.load_generator(model_dir)
    assert generator.count_params() > 0
