"""ESRGAN training parts on 2 replicas (conftest splits the CPU): RaGAN against a hand
computation, spectral norm under MirroredStrategy, VGG19 features before activation, the
generator EMA against its closed form."""

import functools

import keras
import numpy as np
import pytest
import tensorflow as tf

from trainer import config, ema, losses, models, perceptual, steps

HR_SIZE = 16
SCALE = 4


@functools.cache
def _mirrored():
    return tf.distribute.MirroredStrategy(
        ["/cpu:0", "/cpu:1"], cross_device_ops=tf.distribute.ReductionToOneDevice()
    )


def _softplus(x):
    return np.log1p(np.exp(x))


# Per-pixel logits of 2 real and 2 fake images (2x2 logits each), fixed.
REAL = np.array([[[1.0, 2.0], [0.0, -1.0]], [[3.0, 0.5], [1.5, 2.5]]], np.float32)[..., None]
FAKE = np.array([[[-1.0, 0.0], [-2.0, 1.0]], [[0.5, -0.5], [-1.5, -3.0]]], np.float32)[..., None]


def _ragan_by_hand():
    """BasicSR's ESRGAN losses on REAL / FAKE: BCE-with-logits means over every logit."""
    mean_real, mean_fake = REAL.mean(), FAKE.mean()  # 1.1875 and -0.8125
    # Label 1: -log(sigmoid(z)) = softplus(-z); label 0: -log(1 - sigmoid(z)) = softplus(z).
    d_real = _softplus(-(REAL - mean_fake)).reshape(2, -1).mean(axis=1)
    d_fake = _softplus(FAKE - mean_real).reshape(2, -1).mean(axis=1)
    g_real = _softplus(REAL - mean_fake).reshape(2, -1).mean(axis=1)
    g_fake = _softplus(-(FAKE - mean_real)).reshape(2, -1).mean(axis=1)
    return 0.5 * (d_real + d_fake), 0.5 * (g_real + g_fake)


def test_ragan_losses_match_a_hand_computation_on_one_and_two_replicas():
    d_expected, g_expected = _ragan_by_hand()
    np.testing.assert_allclose(
        losses.relativistic_discriminator_loss(REAL, FAKE), d_expected, rtol=1e-6
    )
    np.testing.assert_allclose(
        losses.relativistic_generator_loss(REAL, FAKE), g_expected, rtol=1e-6
    )
    # One image per replica: E[C(x)] is still over the global batch (all-reduced), so the
    # replicas' shares of the global mean add up to the same loss.
    strategy = _mirrored()

    @tf.function
    def shares():
        def replica_fn():
            i = tf.distribute.get_replica_context().replica_id_in_sync_group
            real, fake = tf.gather(REAL, [i]), tf.gather(FAKE, [i])
            return (
                losses.average(losses.relativistic_discriminator_loss(real, fake)),
                losses.average(losses.relativistic_generator_loss(real, fake)),
            )

        d, g = strategy.run(replica_fn)
        total = tf.distribute.ReduceOp.SUM
        return strategy.reduce(total, d, axis=None), strategy.reduce(total, g, axis=None)

    d_loss, g_loss = shares()
    assert float(d_loss) == pytest.approx(d_expected.mean(), rel=1e-6)
    assert float(g_loss) == pytest.approx(g_expected.mean(), rel=1e-6)
    with pytest.raises(ValueError, match="gan_loss must be one of"):
        config.LossConfig(gan_loss="wgan")


def _batch(global_batch=4):
    lr = tf.random.stateless_uniform([global_batch, HR_SIZE // SCALE, HR_SIZE // SCALE, 3], [0, 1])
    hr = tf.random.stateless_uniform([global_batch, HR_SIZE, HR_SIZE, 3], [0, 2]) * 2.0 - 1.0
    return lr, hr


def _largest_singular_value(kernel):
    return np.linalg.svd(np.reshape(kernel, [-1, kernel.shape[-1]]), compute_uv=False)[0]


def test_unet_spectral_norm_on_two_replicas_normalises_and_checkpoints(tmp_path):
    strategy = _mirrored()
    keras.utils.set_random_seed(0)
    with strategy.scope():
        discriminator = models.unet_discriminator(base_channels=4)
        variables = discriminator.trainable_variables
        optimizer = steps.create_optimizer(1e-3, 0.9, 0.999, False, variables)
    spectral = [x for x in discriminator.layers if isinstance(x, models.SpectralNormConv2D)]
    for layer in spectral:  # far from norm 1, so that only the normalisation can bring it back
        layer.kernel.assign(layer.kernel.numpy() * 10.0)
    before = [layer.sn_u.numpy().copy() for layer in spectral]
    _, hr = _batch()

    @tf.function
    def train(num_steps):
        def replica_step(images):
            with tf.GradientTape() as tape:
                logits = discriminator(images, training=True)
                loss = losses.average(losses.discriminator_loss(logits, -logits))
            optimizer.apply(tape.gradient(loss, variables), variables)
            return loss

        for _ in tf.range(num_steps):
            strategy.run(replica_step, args=(hr[:2],))

    train(tf.constant(16))  # 16 discriminator training steps: 16 power iterations
    for layer, u0 in zip(spectral, before, strict=True):
        assert _largest_singular_value(layer.kernel.numpy()) > 3.0
        sigma = _largest_singular_value(layer.normalized_kernel().numpy())
        assert sigma == pytest.approx(1.0, abs=0.05), layer.name
        copies = [v.numpy() for v in strategy.experimental_local_results(layer.sn_u.value)]
        assert len(copies) == 2 and not np.allclose(copies[0], u0)
        np.testing.assert_array_equal(copies[0], copies[1])
    prefix = tf.train.Checkpoint(discriminator=discriminator).write(str(tmp_path / "d"))
    with strategy.scope():
        restored = models.unet_discriminator(base_channels=4)
    tf.train.Checkpoint(discriminator=restored).read(prefix).assert_existing_objects_matched()
    for ours, theirs in zip(discriminator.weights, restored.weights, strict=True):
        np.testing.assert_array_equal(ours.numpy(), theirs.numpy())
    assert any("sn_u" in w.path for w in restored.weights)


def test_ema_after_k_steps_equals_its_closed_form_on_two_replicas():
    decay, k = 0.7, 3
    strategy = _mirrored()
    keras.utils.set_random_seed(0)
    with strategy.scope():
        generator = models.compact_generator(2, num_blocks=1, channels=4)
        average = models.compact_generator(2, num_blocks=1, channels=4)
        g_opt = steps.create_optimizer(1e-2, 0.9, 0.999, False, generator.trainable_variables)
    ema.copy(average, generator)
    loop_fn = steps.build_train_loop_fn(
        strategy,
        config.StepConfig(phase="pretrain"),
        generator,
        None,
        None,
        g_opt,
        None,
        ema_generator=average,
        ema_decay=decay,
    )
    lr = tf.random.stateless_uniform([4, 4, 4, 3], [1, 1])
    hr = tf.random.stateless_uniform([4, 8, 8, 3], [1, 2]) * 2.0 - 1.0
    dataset = tf.data.Dataset.from_tensors((lr, hr)).repeat()
    iterator = iter(strategy.experimental_distribute_dataset(dataset))
    initial = [w.numpy() for w in generator.trainable_weights]
    history = []
    for _ in range(k):
        loop_fn(iterator)
        history.append([w.numpy() for w in generator.trainable_weights])
    for i, weight in enumerate(average.trainable_weights):
        expected = ema.closed_form(initial[i], [h[i] for h in history], decay)
        assert not np.allclose(expected, history[-1][i])  # the average lags the weights
        for copy in strategy.experimental_local_results(weight.value):
            np.testing.assert_allclose(copy.numpy(), expected, rtol=1e-5, atol=1e-7)


def test_vgg19_features_before_activation_with_layer_weights(tmp_path):
    keras.utils.set_random_seed(2)
    vgg = keras.applications.VGG19(include_top=False, weights=None, input_shape=(None, None, 3))
    path = str(tmp_path / "vgg19_random.weights.h5")
    vgg.save_weights(path)
    names = ["conv1_2", "conv2_2"]
    model = perceptual.build_content_model("vgg19", weights=path, layers_=names)
    images = tf.random.stateless_uniform([2, 16, 16, 3], [3, 4]) * 2.0 - 1.0
    features = model(images)
    preprocessed = keras.applications.vgg19.preprocess_input((images.numpy() + 1.0) * 127.5)
    scale = 1.0 / (255.0 * 0.226)
    for name, feature in zip(["block1_conv2", "block2_conv2"], features, strict=True):
        after_relu = keras.Model(vgg.input, vgg.get_layer(name).output)(preprocessed).numpy()
        feature = feature.numpy() / scale
        assert feature.min() < 0.0  # before the ReLU
        np.testing.assert_allclose(np.maximum(feature, 0.0), after_relu, rtol=1e-4, atol=1e-2)

    sr = images * 0.5
    weights = [0.1, 1.0]
    loss = perceptual.content_loss(model, images, sr, criterion="l1", layer_weights=weights)
    sr_features = model(sr)
    expected = sum(
        w * np.abs(f.numpy() - g.numpy()).mean(axis=(1, 2, 3))
        for w, f, g in zip(weights, features, sr_features, strict=True)
    )
    np.testing.assert_allclose(loss.numpy(), expected, rtol=1e-4)

    parsed = config.LossConfig(
        perceptual_network="vgg19", perceptual_layers="conv1_2:0.1,conv5_4"
    ).perceptual_layers
    assert parsed == (("conv1_2", 0.1), ("conv5_4", 1.0))
    assert config.LossConfig(perceptual_network="vgg19").perceptual_criterion == "l1"
    assert config.LossConfig().perceptual_criterion == "mse"
    for bad, message in [
        ("conv5_5:1", "Unknown VGG19 layer"),
        ("conv1_2:x", "not a number"),
        ("conv1_2:-1", "negative weight"),
        ("conv1_2:0", "need a positive weight"),
    ]:
        with pytest.raises(ValueError, match=message):
            config.LossConfig(perceptual_network="vgg19", perceptual_layers=bad)
    with pytest.raises(ValueError, match="applies to the vgg19 network only"):
        config.LossConfig(perceptual_network="vgg54", perceptual_layers="conv5_4:1")
