"""The training step on tiny models: 2-replica MirroredStrategy on logical CPUs, XLA modes, AMP."""

import functools

import keras
import numpy as np
import pytest
import tensorflow as tf

from data_prep import schema
from tests import fixtures
from trainer import config, loss_scaling, losses, models, perceptual, steps, value_range

GLOBAL_BATCH = 4
HR_SIZE = 32
SCALE = 4


@functools.cache
def _mirrored():
    # One strategy per process, as in training: strategies created side by side reuse
    # collective instance keys. Host reduction is what trainer.strategy picks on CPU.
    return tf.distribute.MirroredStrategy(
        ["/cpu:0", "/cpu:1"], cross_device_ops=tf.distribute.ReductionToOneDevice()
    )


@functools.cache
def _one_device():
    return tf.distribute.OneDeviceStrategy("/cpu:0")


def _batch():
    hr = np.stack([fixtures.make_image(HR_SIZE, HR_SIZE, seed=i) for i in range(GLOBAL_BATCH)])
    lr = np.stack([fixtures.downscale(image, SCALE) for image in hr])
    return value_range.lr_from_uint8(lr), value_range.hr_from_uint8(hr)


def _tiny_content_model():
    # A stand-in for VGG54 (same call contract, 1000x cheaper): frozen, HR range in, float32 out.
    inputs = keras.Input(shape=(None, None, 3))
    features = keras.layers.Conv2D(4, 3, strides=2, dtype="float32")(inputs)
    model = keras.Model(inputs, features)
    model.trainable = False
    return model


def _run(
    strategy,
    phase,
    xla="off",
    loops=3,
    steps_per_loop=2,
    mixed_precision=False,
    content_model_fn=_tiny_content_model,
):
    """Builds seeded tiny models under `strategy`, runs `loops` loop calls, returns the metrics."""
    keras.utils.set_random_seed(0)
    with strategy.scope():
        generator = models.srresnet_generator(scale=SCALE, num_blocks=1, channels=8)
        g_opt = steps.create_optimizer(
            1e-3, 0.9, 0.999, mixed_precision, generator.trainable_variables
        )
        discriminator = content_model = d_opt = None
        if phase == "gan":
            discriminator = models.srgan_discriminator(hr_patch_size=HR_SIZE, base_channels=4)
            content_model = content_model_fn()
            d_opt = steps.create_optimizer(
                1e-3, 0.9, 0.999, mixed_precision, discriminator.trainable_variables
            )
    step_config = config.StepConfig(
        phase=phase, xla=steps.resolve_xla_mode(xla, strategy), steps_per_loop=steps_per_loop
    )
    loop_fn = steps.build_train_loop_fn(
        strategy,
        step_config,
        generator,
        discriminator,
        content_model,
        g_opt,
        d_opt,
        content_loss_fn=perceptual.content_loss,
    )
    dataset = tf.data.Dataset.from_tensors(_batch()).repeat()
    iterator = iter(strategy.experimental_distribute_dataset(dataset))
    results = [{k: float(v) for k, v in loop_fn(iterator).items()} for _ in range(loops)]
    return results, generator, g_opt


@pytest.fixture
def mixed_policy():
    keras.mixed_precision.set_global_policy("mixed_float16")
    yield
    keras.mixed_precision.set_global_policy("float32")


def test_pretrain_loss_falls_when_overfitting_one_batch_on_two_replicas():
    results, _, g_opt = _run(_mirrored(), "pretrain", loops=6, steps_per_loop=5)
    assert set(results[0]) == {"pixel_loss"}
    assert int(g_opt.iterations.numpy()) == 30
    assert results[-1]["pixel_loss"] < 0.6 * results[0]["pixel_loss"]


def test_gan_step_on_two_replicas_with_vgg54_updates_both_models():
    strategy = _mirrored()
    results, _, g_opt = _run(
        strategy,
        "gan",
        loops=2,
        steps_per_loop=1,
        content_model_fn=lambda: perceptual.build_content_model("vgg54", "none"),
    )
    assert set(results[0]) == set(steps.GAN_METRICS)
    assert all(np.isfinite(v) for r in results for v in r.values())
    assert 0.0 < results[0]["d_real"] < 1.0 and 0.0 < results[0]["d_fake"] < 1.0
    assert int(g_opt.iterations.numpy()) == 2
    expected_g = results[0]["content_loss"] + 1e-3 * results[0]["adversarial_loss"]
    assert results[0]["g_loss"] == pytest.approx(expected_g, rel=1e-5)


@pytest.mark.parametrize("phase", config.PHASES)
def test_xla_step_gives_the_same_losses_as_off_on_one_device(phase):
    off, _, _ = _run(_one_device(), phase, xla="off", loops=2, steps_per_loop=1)
    compiled, _, _ = _run(_one_device(), phase, xla="step", loops=2, steps_per_loop=1)
    for a, b in zip(off, compiled, strict=True):
        for name in a:
            assert b[name] == pytest.approx(a[name], rel=1e-3, abs=1e-5), name


def test_xla_auto_on_two_replicas_gives_the_same_losses():
    # The srresnet (BN) fallback of --xla=step with several replicas (tests/trainer/
    # test_xla_replicas.py checks the resolution).
    strategy = _mirrored()
    off, _, _ = _run(strategy, "pretrain", xla="off", loops=2)
    step, _, _ = _run(strategy, "pretrain", xla="auto", loops=2)
    for a, b in zip(off, step, strict=True):
        assert b["pixel_loss"] == pytest.approx(a["pixel_loss"], rel=1e-4)


# The GAN step holds both optimizers and the multi-replica loss scaling; XLA compiles of the GAN
# step take tens of seconds on this CPU, so the compiled mode is exercised with pretrain.
@pytest.mark.parametrize(
    "phase,xla,strategy_fn",
    [("gan", "off", _mirrored), ("pretrain", "auto", _mirrored), ("pretrain", "step", _one_device)],
)
def test_mixed_precision_runs_under_each_xla_mode(mixed_policy, phase, xla, strategy_fn):
    results, generator, g_opt = _run(
        strategy_fn(), phase, xla=xla, loops=2, steps_per_loop=2, mixed_precision=True
    )
    assert isinstance(g_opt, keras.optimizers.LossScaleOptimizer)
    assert generator.layers[1].compute_dtype == "float16"
    assert all(np.isfinite(v) for r in results for v in r.values())
    assert int(g_opt.iterations.numpy()) == 4
    assert float(g_opt.step_counter.numpy()) == 4  # four finite steps, none skipped


def _loss_scaled_dense_step(strategy, optimizer, model, loss_factor):
    @tf.function
    def run(x):
        def replica_step(x):
            with tf.GradientTape() as tape:
                loss = tf.reduce_mean(model(x)) * loss_factor
                scaled = optimizer.scale_loss(loss)
            loss_scaling.apply_gradients(optimizer, tape, scaled, model.trainable_variables)

        strategy.run(replica_step, args=(x,))

    run(tf.ones([2, 3]))


def test_loss_scaling_on_two_replicas_skips_overflow_and_grows_the_scale():
    strategy = _mirrored()
    with strategy.scope():
        model = keras.Sequential([keras.Input((3,)), keras.layers.Dense(1)])
        optimizer = keras.optimizers.LossScaleOptimizer(
            keras.optimizers.Adam(0.1), initial_scale=1024.0, dynamic_growth_steps=2
        )
        optimizer.build(model.trainable_variables)
    kernel = model.layers[0].kernel.numpy()
    _loss_scaled_dense_step(strategy, optimizer, model, np.float32(np.inf))
    assert float(optimizer.dynamic_scale.numpy()) == 512.0
    np.testing.assert_array_equal(model.layers[0].kernel.numpy(), kernel)  # no update
    for _ in range(2):
        _loss_scaled_dense_step(strategy, optimizer, model, 1.0)
    assert float(optimizer.dynamic_scale.numpy()) == 1024.0
    assert not np.array_equal(model.layers[0].kernel.numpy(), kernel)


def test_resolve_xla_mode_defaults_and_bad_values():
    assert steps.resolve_xla_mode("default", _one_device()) == steps.CPU_DEFAULT_XLA
    assert steps.resolve_xla_mode("step", _one_device()) == "step"
    assert steps.resolve_xla_mode("auto", _mirrored()) == "auto"
    with pytest.raises(ValueError, match="xla must be one of"):
        steps.resolve_xla_mode("jit", _one_device())
    with pytest.raises(ValueError, match="phase must be one of"):
        config.StepConfig(phase="finetune")
    with pytest.raises(ValueError, match="xla must be one of"):
        config.StepConfig(phase=config.PRETRAIN, xla="default")  # resolved before, not here


def test_losses_per_example_values():
    hr = tf.zeros([2, 2, 2, 3])
    sr = tf.stack([tf.zeros([2, 2, 3]), tf.fill([2, 2, 3], 0.5)])
    np.testing.assert_allclose(losses.pixel_loss(hr, sr, "mse"), [0.0, 0.25])
    np.testing.assert_allclose(losses.pixel_loss(hr, sr, "l1"), [0.0, 0.5])
    logits = tf.constant([[0.0], [100.0]])
    np.testing.assert_allclose(
        losses.generator_adversarial_loss(logits), [np.log(2.0), 0.0], atol=1e-6
    )
    np.testing.assert_allclose(
        losses.discriminator_loss(logits, -logits), [2 * np.log(2.0), 0.0], atol=1e-6
    )
    # Each of 2 replicas holds 2 of a global batch of 4: its share of the global mean.
    assert float(losses.average(tf.constant([1.0, 3.0]), global_batch_size=4)) == 1.0
    with pytest.raises(ValueError, match="pixel_loss must be one of"):
        config.LossConfig(pixel_loss="l2")


@pytest.mark.parametrize("scale", schema.SCALES)
def test_generator_builds_every_scale_with_its_subpixel_stages(scale):
    generator = models.srresnet_generator(scale=scale, num_blocks=1, channels=4, bicubic_skip=True)
    shuffles = [layer.block_size for layer in generator.layers if hasattr(layer, "block_size")]
    assert shuffles == {2: [2], 3: [3], 4: [2, 2], 8: [2, 2, 2]}[scale]
    assert generator(tf.zeros([1, 5, 7, 3])).shape == (1, 5 * scale, 7 * scale, 3)
    with pytest.raises(ValueError, match=r"scale must be one of \(2, 3, 4, 8\)"):
        models.srresnet_generator(scale=6)
