"""The ESRGAN recipe through the training loop on 2 replicas: SRVGGNetCompact pretrained, then
its GAN with the U-Net discriminator, RaGAN and VGG19 layers before activation; the EMA started,
saved, resumed exactly and used by validation and loading; RRDBNet + U-Net in mixed precision."""

import dataclasses
import os

import keras
import numpy as np
import pytest
import tensorflow as tf

from tests import fixtures
from trainer import config as config_lib
from trainer import generator_store, input_pipeline, loop, models, perceptual, steps


@pytest.fixture(scope="module")
def source(tmp_path_factory):
    out = str(tmp_path_factory.mktemp("data"))
    fixtures.write_dataset(
        out,
        {
            "train": [(f"t{i}", fixtures.make_image(32, 32, seed=i)) for i in range(2)],
            "validation": [("v0", fixtures.make_image(32, 32, seed=9))],
        },
    )
    return input_pipeline.open_dataset(out)


def _config(model_dir, phase, train_steps=2, ema_decay=0.5):
    loss = config_lib.LossConfig(
        perceptual_weights="none",
        pixel_loss="l1",
        gan_loss="ragan",
        perceptual_network="vgg19",
        perceptual_layers="conv1_2:0.1,conv2_2:1",
        adversarial_weight=5e-3,
        pixel_weight=1e-2,
    )
    return config_lib.RunConfig(
        model_dir=model_dir,
        generator=config_lib.GeneratorConfig(
            scale=4, architecture="compact", num_blocks=2, channels=8
        ),
        discriminator=config_lib.DiscriminatorConfig("unet", channels=4),
        step=config_lib.StepConfig(phase=phase, steps_per_loop=2, loss=loss),
        input=config_lib.InputConfig(
            hr_patch_size=16, global_batch_size=4, crops_per_image=2, shuffle_buffer=4
        ),
        optimizer=config_lib.OptimizerConfig(ema_decay=ema_decay),
        schedule=config_lib.ScheduleConfig(train_steps=train_steps),
        reporting=config_lib.ReportingConfig(checkpoint_steps=2, log_steps=2),
        seed=0,
    )


def _weights(model):
    return [w.numpy() for w in model.weights]


def test_compact_pretrain_then_unet_ragan_gan_with_ema_resumed_exactly(source, strategy, tmp_path):
    model_dir = str(tmp_path / "model")
    step, metrics = loop.train(_config(model_dir, "pretrain", ema_decay=0.0), source, strategy)
    assert step == 2 and np.isfinite(metrics["pixel_loss"])
    with pytest.raises(ValueError, match="holds no generator EMA"):
        generator_store.load_generator(model_dir, weights="ema")
    # A resumed run that turns the EMA on starts it at the restored weights.
    resumed = loop.build_controller(_config(model_dir, "pretrain", train_steps=4), source, strategy)
    assert resumed.state.step() == 2
    for average, weight in zip(
        _weights(resumed.state.ema_generator), _weights(resumed.state.generator), strict=True
    ):
        np.testing.assert_array_equal(average, weight)
    resumed.run()  # to step 4, with the EMA checkpointed

    # The GAN phase starts from the pretrain phase's EMA (Real-ESRGAN: params_ema).
    pretrain_ema, _, _ = generator_store.load_generator(model_dir, weights="ema", phase="pretrain")
    gan = loop.build_controller(_config(model_dir, "gan"), source, strategy)
    for ours, saved in zip(_weights(gan.state.generator), _weights(pretrain_ema), strict=True):
        np.testing.assert_array_equal(ours, saved)
    metrics = gan.run()
    assert gan.state.step() == 2 and all(np.isfinite(v) for v in metrics.values())
    assert 0.0 < metrics["d_real"] < 1.0 and metrics["content_loss"] > 0.0
    gan_prefix = tf.train.latest_checkpoint(os.path.join(model_dir, "gan"))
    assert generator_store.checkpoint_has_ema(gan_prefix)
    average, _, _ = generator_store.load_generator(model_dir)  # the EMA by default
    raw, _, _ = generator_store.load_generator(model_dir, weights="raw")
    assert (average.restored_weights, raw.restored_weights) == ("ema", "raw")
    assert any(
        not np.array_equal(a, r) for a, r in zip(_weights(average), _weights(raw), strict=True)
    )
    # Resume: the EMA (and the discriminator's spectral-norm vectors) come back exactly, and
    # validation and image grids run the EMA.
    controller = loop.build_controller(_config(model_dir, "gan", train_steps=4), source, strategy)
    state = controller.state
    for ours, saved in zip(_weights(state.ema_generator), _weights(average), strict=True):
        np.testing.assert_array_equal(ours, saved)
    assert state.inference_generator is state.ema_generator
    sn_u = [w for w in state.discriminator.weights if "sn_u" in w.path]
    reader = tf.train.load_checkpoint(gan_prefix)
    saved_sn = [reader.get_tensor(n) for n, _ in tf.train.list_variables(gan_prefix) if "sn_u" in n]
    assert len(sn_u) == len(saved_sn) == 8
    assert {tuple(np.round(w.numpy(), 6)) for w in sn_u} == {
        tuple(np.round(v, 6)) for v in saved_sn
    }
    other = dataclasses.replace(
        _config(model_dir, "gan"), discriminator=config_lib.DiscriminatorConfig("unet", 8)
    )
    with pytest.raises(ValueError, match="does not hold this run's models"):
        loop.build_controller(other, source, strategy)


@pytest.fixture
def mixed_policy():
    keras.mixed_precision.set_global_policy("mixed_float16")
    yield
    keras.mixed_precision.set_global_policy("float32")


def test_rrdb_and_unet_ragan_step_in_mixed_precision_on_two_replicas(mixed_policy, strategy):
    keras.utils.set_random_seed(0)
    with strategy.scope():
        generator = models.rrdb_generator(4, num_blocks=1, channels=8, growth=4)
        discriminator = models.unet_discriminator(base_channels=4)
        g_opt = steps.create_optimizer(1e-4, 0.9, 0.999, True, generator.trainable_variables)
        d_opt = steps.create_optimizer(1e-4, 0.9, 0.999, True, discriminator.trainable_variables)
        content = perceptual.build_content_model("vgg19", "none", layers_=["conv1_2"])
    assert discriminator.layers[2].compute_dtype == "float16"
    step_config = config_lib.StepConfig(
        phase="gan",
        steps_per_loop=2,
        loss=config_lib.LossConfig(
            perceptual_network="vgg19", perceptual_weights="none", gan_loss="ragan"
        ),
    )
    loop_fn = steps.build_train_loop_fn(
        strategy, step_config, generator, discriminator, content, g_opt, d_opt
    )
    lr = tf.random.stateless_uniform([4, 4, 4, 3], [0, 1])
    hr = tf.random.stateless_uniform([4, 16, 16, 3], [0, 2]) * 2.0 - 1.0
    dataset = tf.data.Dataset.from_tensors((lr, hr)).repeat()
    metrics = loop_fn(iter(strategy.experimental_distribute_dataset(dataset)))
    assert all(np.isfinite(float(v)) for v in metrics.values())
    assert float(g_opt.step_counter.numpy()) == 2  # both steps finite, none skipped
