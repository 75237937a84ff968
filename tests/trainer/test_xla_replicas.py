"""XLA with several replicas (2 logical CPUs, conftest): replica_gradients gives the losses of
`off` for BN-free models; BN models and what needs merge_call fall back to auto."""

import dataclasses
import functools

import keras
import numpy as np
import pytest
import tensorflow as tf

from tests import fixtures
from trainer import config, models, perceptual, steps, value_range

SCALE = 4


@functools.cache
def _mirrored():
    return tf.distribute.MirroredStrategy(
        ["/cpu:0", "/cpu:1"], cross_device_ops=tf.distribute.ReductionToOneDevice()
    )


def _batch(hr_size=16):
    hr = np.stack([fixtures.make_image(hr_size, hr_size, seed=i) for i in range(4)])
    lr = np.stack([fixtures.downscale(image, SCALE) for image in hr])
    return value_range.lr_from_uint8(lr), value_range.hr_from_uint8(hr)


def _content_model():
    inputs = keras.Input(shape=(None, None, 3))
    model = keras.Model(inputs, keras.layers.Conv2D(4, 3, strides=2)(inputs))
    model.trainable = False
    return model


def _run(phase, xla, make_generator, make_discriminator=None, loops=2):
    strategy = _mirrored()
    keras.utils.set_random_seed(0)
    with strategy.scope():
        generator = make_generator()
        g_opt = steps.create_optimizer(1e-3, 0.9, 0.999, False, generator.trainable_variables)
        discriminator = content_model = d_opt = None
        if phase == config.GAN:
            discriminator = make_discriminator()
            content_model = _content_model()
            d_opt = steps.create_optimizer(
                1e-3, 0.9, 0.999, False, discriminator.trainable_variables
            )
    loop_fn = steps.build_train_loop_fn(
        strategy,
        config.StepConfig(phase=phase, xla=xla, steps_per_loop=1),
        generator,
        discriminator,
        content_model,
        g_opt,
        d_opt,
        content_loss_fn=perceptual.content_loss,
    )
    dataset = tf.data.Dataset.from_tensors(_batch()).repeat()
    iterator = iter(strategy.experimental_distribute_dataset(dataset))
    return [{k: float(v) for k, v in loop_fn(iterator).items()} for _ in range(loops)]


def _compact():
    return models.compact_generator(SCALE, num_blocks=1, channels=4)


def _assert_same(off, compiled):
    for a, b in zip(off, compiled, strict=True):
        assert set(a) == set(b)
        for name in a:
            assert b[name] == pytest.approx(a[name], rel=1e-4, abs=1e-6), name


def test_replica_gradients_pretrain_gives_the_losses_of_off_on_two_replicas():
    off = _run(config.PRETRAIN, "off", _compact)
    compiled = _run(config.PRETRAIN, config.XLA_REPLICA_GRADIENTS, _compact)
    _assert_same(off, compiled)
    assert compiled[1]["pixel_loss"] != compiled[0]["pixel_loss"]  # the weights moved


def _unet():
    return models.unet_discriminator(base_channels=4)


def test_replica_gradients_gan_gives_the_losses_of_off_on_two_replicas():
    """Real-ESRGAN's pairing: compact + the spectral-norm U-Net (its iterate is written inside
    the compiled replica step: an on-read variable, no merge_call) + bce."""
    off = _run(config.GAN, "off", _compact, _unet)
    compiled = _run(config.GAN, config.XLA_REPLICA_GRADIENTS, _compact, _unet)
    _assert_same(off, compiled)  # the second step sees both updates of the first


def _resolve(requested, *models, gpu=True, replicas=2):
    return config.resolve_xla(
        requested, gpu=gpu, num_replicas=replicas, cpu_default="off", models=models or None
    )[0]


def test_resolution_by_model_device_and_replicas():
    pretrain = ("pretrain", "compact", "vgg", "bce")
    assert _resolve("default", *pretrain) == config.XLA_REPLICA_GRADIENTS
    assert _resolve("step", "pretrain", "rrdb", "vgg", "bce") == config.XLA_REPLICA_GRADIENTS
    assert _resolve("default", *pretrain, gpu=False) == "off"
    assert _resolve("default", *pretrain, replicas=1) == "step"
    assert _resolve(config.XLA_REPLICA_GRADIENTS, *pretrain, replicas=1) == "step"
    # BN models, the spectral-norm write and ragan's all-reduce fall back to auto.
    assert _resolve("default", "pretrain", "srresnet", "vgg", "bce") == "auto"
    assert _resolve("step", "gan", "compact", "vgg", "bce") == "auto"
    assert _resolve("step", "gan", "compact", "unet", "ragan") == "auto"
    assert _resolve("step", "gan", "rrdb", "unet", "bce") == config.XLA_REPLICA_GRADIENTS
    assert _resolve("auto", *pretrain) == "auto" and _resolve("off", *pretrain) == "off"
    # Without the models, several replicas keep "step" for the loop to resolve.
    assert _resolve("step") == "step"
    with pytest.raises(ValueError, match="xla must be one of"):
        _resolve("jit")


def test_bn_model_falls_back_to_auto_and_cannot_be_forced():
    run = config.RunConfig(
        model_dir="unused",
        generator=config.GeneratorConfig(scale=SCALE, num_blocks=1, channels=4),
        step=config.StepConfig(phase="pretrain", loss=config.LossConfig(perceptual_weights="none")),
    )
    assert steps.resolve_xla_mode("step", _mirrored(), run) == "auto"
    compact = config.GeneratorConfig(scale=SCALE, architecture="compact", num_blocks=1, channels=4)
    # On CPU "default" stays the measured CPU default even for BN-free models.
    assert steps.resolve_xla_mode("default", _mirrored(), run) == steps.CPU_DEFAULT_XLA
    bn_free = dataclasses.replace(run, generator=compact)
    assert steps.resolve_xla_mode("step", _mirrored(), bn_free) == config.XLA_REPLICA_GRADIENTS
    srresnet = functools.partial(models.srresnet_generator, SCALE, num_blocks=1, channels=4)
    with pytest.raises(ValueError, match="needs BN-free models"):
        _run(config.PRETRAIN, config.XLA_REPLICA_GRADIENTS, srresnet)
    with pytest.raises(ValueError, match="must be resolved against the models"):
        _run(config.PRETRAIN, "step", _compact)
