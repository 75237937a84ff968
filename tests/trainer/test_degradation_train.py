"""Training with LR synthesised on the fly (--degradation=realesrgan) on 2 replicas: the device
and input placements train identically, a resumed run continues the uninterrupted run's
degradations, unsharp-masked targets on stored pairs, and the flag checks."""

import os
import subprocess
import sys

import numpy as np
import pytest
import tensorflow as tf

from tests import fixtures
from trainer import config as config_lib
from trainer import degrade_batches, input_pipeline, loop

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


@pytest.fixture(scope="module")
def source(tmp_path_factory):
    out = str(tmp_path_factory.mktemp("data"))
    fixtures.write_dataset(
        out, {"train": [(f"t{i}", fixtures.make_image(64, 64, seed=i)) for i in range(4)]}
    )
    return input_pipeline.open_dataset(out)


def _config(model_dir, train_steps=4, degrade_on="device", usm=True, kind="realesrgan", **kw):
    """A tiny compact generator, batch 4 of 64-px HR patches over 2 replicas, seeded."""
    return config_lib.RunConfig(
        model_dir=str(model_dir),
        generator=config_lib.GeneratorConfig(
            scale=4, architecture="compact", num_blocks=1, channels=8
        ),
        step=config_lib.StepConfig(phase=config_lib.PRETRAIN, xla="off", steps_per_loop=2),
        input=config_lib.InputConfig(
            hr_patch_size=64, global_batch_size=4, crops_per_image=2, shuffle_buffer=8
        ),
        degradation=config_lib.DegradationChoice(kind=kind, degrade_on=degrade_on, usm_targets=usm),
        schedule=config_lib.ScheduleConfig(train_steps=train_steps, learning_rates=(1e-3,)),
        reporting=config_lib.ReportingConfig(checkpoint_steps=2, log_steps=2),
        seed=0,
        **kw,
    )


def _weights(model_dir):
    prefix = tf.train.latest_checkpoint(os.path.join(model_dir, "pretrain"))
    reader = tf.train.load_checkpoint(prefix)
    return {
        name: reader.get_tensor(name)
        for name, _ in tf.train.list_variables(prefix)
        if name.startswith("g_optimizer/_trainable_variables/")
    }


def _assert_same(a, b):
    assert a and set(a) == set(b)
    for name, value in a.items():
        np.testing.assert_allclose(b[name], value, rtol=1e-5, atol=1e-6, err_msg=name)


def test_placements_and_resume_draw_the_same_degradations(source, strategy, tmp_path):
    """4 steps degrading on the device == 2 steps degrading in tf.data, resumed for 2 more on
    the device: the loop's step numbering, the pipeline's (step, replica) rule and the resumed
    run's seeds all agree."""

    def run(model_dir, steps, place):
        config = _config(model_dir, steps, degrade_on=place, replay_input_on_resume=True)
        step, metrics = loop.train(config, source, strategy)
        assert step == steps and np.isfinite(metrics["pixel_loss"])
        return _weights(str(model_dir))

    uninterrupted = run(tmp_path / "uninterrupted", 4, "device")
    run(tmp_path / "interrupted", 2, "input")
    _assert_same(uninterrupted, run(tmp_path / "interrupted", 4, "device"))


def test_the_batches_each_replica_trains_on(source, strategy):
    """The step's view: LR from the degradation (not the stored bicubic), replicas differ, the
    USM target differs from the real HR, and the input placement makes the same batches."""
    choice = config_lib.DegradationChoice(kind="realesrgan", usm_targets=True)
    config = _config("unused")
    dataset_fn = lambda context: input_pipeline.make_hr_train_dataset(  # noqa: E731
        source, config.input, 0, context
    )
    hr = next(iter(strategy.distribute_datasets_from_function(dataset_fn)))
    prepare = degrade_batches.prepare_fn(choice, 4, seed=7)
    lr, target, real = (
        strategy.experimental_local_results(t)
        for t in strategy.run(prepare, args=(hr, tf.constant(5, tf.int64)))
    )
    assert lr[0].shape == (2, 16, 16, 3) and target[0].shape == (2, 64, 64, 3)
    assert not np.array_equal(lr[0].numpy(), lr[1].numpy())
    assert float(tf.reduce_max(tf.abs(target[0] - real[0]))) > 0.01
    np.testing.assert_allclose(real[0].numpy(), hr.values[0].numpy() * 2 - 1, atol=1e-6)
    # The input placement at step 5 on replica 1 of one pipeline: the same LR.
    context = tf.distribute.InputContext(num_input_pipelines=1, num_replicas_in_sync=2)
    single = tf.data.Dataset.from_tensors(hr.values[0]).concatenate(
        tf.data.Dataset.from_tensors(hr.values[1])
    )
    batches = list(degrade_batches.degrade_dataset(single, choice, 4, 7, 5, context))
    for replica in (0, 1):
        np.testing.assert_array_equal(batches[replica][0].numpy(), lr[replica].numpy())


def test_usm_targets_on_stored_pairs_sharpen_the_target_only(source, strategy, tmp_path):
    step, metrics = loop.train(
        _config(tmp_path / "usm", train_steps=2, kind="none"), source, strategy
    )
    assert step == 2 and np.isfinite(metrics["pixel_loss"])


def test_degrade_on_without_a_degradation_is_a_usage_error(source, tmp_path):
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "trainer.train",
            f"--data_dir={source.data_dir}",
            f"--model_dir={tmp_path}",
            "--degrade_on=input",
        ],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode != 0
    assert "--degrade_on applies with --degradation=realesrgan only" in result.stderr
