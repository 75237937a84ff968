"""Perceptual feature extractors: weights from a file, random weights, the offline error."""

import dataclasses
import logging

import keras
import numpy as np
import pytest
import tensorflow as tf

from trainer import perceptual


def _hr_images(batch=2, size=32, seed=0):
    rng = np.random.default_rng(seed)
    return tf.constant(rng.uniform(-1.0, 1.0, size=(batch, size, size, 3)), tf.float32)


@pytest.mark.parametrize("mirrored", [False, True])
def test_vgg54_weights_from_file_match_the_saved_network(tmp_path, mirrored):
    keras.utils.set_random_seed(1)
    vgg = keras.applications.VGG19(include_top=False, weights=None, input_shape=(None, None, 3))
    path = str(tmp_path / "vgg19_random.weights.h5")
    vgg.save_weights(path)

    # The trainer builds it inside its strategy's scope (2 logical CPUs, see conftest).
    strategy = (
        tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"])
        if mirrored
        else tf.distribute.get_strategy()
    )
    with strategy.scope():
        model = perceptual.build_content_model("vgg54", weights=path)

    images = _hr_images()
    # The reference: Keras' own preprocessing on [0, 255] pixels, then the saved network's layer.
    pixels = (images.numpy() + 1.0) * 127.5
    cut = keras.Model(vgg.input, vgg.get_layer("block5_conv4").output)
    expected = cut(keras.applications.vgg19.preprocess_input(pixels)).numpy() / 12.75
    features = model(images).numpy()
    assert features.shape == (2, 2, 2, 512)
    np.testing.assert_allclose(features, expected, rtol=1e-4, atol=1e-4)
    assert model.trainable_weights == []
    assert not model.trainable


def test_weights_none_warns_and_a_model_is_frozen(caplog):
    with caplog.at_level(logging.WARNING):
        model = perceptual.build_content_model("vgg54", weights="none")
    assert "RANDOM weights" in caplog.text
    assert model.trainable_weights == []


def test_content_loss_is_per_example_and_zero_for_identical_images():
    model = perceptual.build_content_model("vgg54", weights="none")
    hr = _hr_images(batch=3)
    sr = tf.concat([hr[:1], _hr_images(batch=2, seed=5)], axis=0)
    loss = perceptual.content_loss(model, hr, sr).numpy()
    assert loss.shape == (3,) and loss.dtype == np.float32
    assert loss[0] == 0.0
    assert np.all(loss[1:] > 0.0)


def test_output_is_float32_under_mixed_precision():
    keras.mixed_precision.set_global_policy("mixed_float16")
    try:
        model = perceptual.build_content_model("vgg54", weights="none")
        features = model(_hr_images())
        loss = perceptual.content_loss(model, _hr_images(), _hr_images(seed=3))
    finally:
        keras.mixed_precision.set_global_policy("float32")
    assert features.dtype == tf.float32
    assert loss.dtype == tf.float32
    assert np.all(np.isfinite(loss.numpy()))


def test_resnet152v2_cut_preprocesses_to_unit_range():
    # ResNet152V2 is big: build it once, feed one small image.
    model = perceptual.build_content_model("resnet152v2", weights="none")
    features = model(_hr_images(batch=1, size=32))
    assert features.shape == (1, 4, 4, 256)  # conv2_block3_out: stride 8
    assert features.dtype == tf.float32
    preprocess = perceptual.ImageNetPreprocess("resnet152v2")
    np.testing.assert_allclose(
        preprocess(tf.constant([[-1.0, 0.0, 1.0]])).numpy(), [[-1.0, 0.0, 1.0]], atol=1e-6
    )


def test_offline_imagenet_raises_a_clear_error(tmp_path, monkeypatch):
    # A closed local port stands in for "no internet", wherever the test runs.
    spec = perceptual.NETWORKS["vgg54"]
    monkeypatch.setitem(
        perceptual.NETWORKS,
        "vgg54",
        dataclasses.replace(spec, weights_origin="http://127.0.0.1:9/" + spec.weights_file),
    )
    with pytest.raises(perceptual.PerceptualWeightsError) as error:
        perceptual.build_content_model("vgg54", weights="imagenet", cache_dir=str(tmp_path))
    message = str(error.value)
    assert "--perceptual_weights=" in message
    assert "vgg19_weights_tf_dim_ordering_tf_kernels_notop.h5" in message
    assert isinstance(error.value, ValueError)


def test_missing_or_wrong_weights_file_is_a_clear_error(tmp_path):
    with pytest.raises(perceptual.PerceptualWeightsError, match="does not exist"):
        perceptual.build_content_model("vgg54", weights=str(tmp_path / "missing.h5"))
    wrong = keras.Sequential([keras.Input((4,)), keras.layers.Dense(2)])
    path = str(tmp_path / "wrong.weights.h5")
    wrong.save_weights(path)
    with pytest.raises(perceptual.PerceptualWeightsError, match="Could not load"):
        perceptual.build_content_model("vgg54", weights=path)
    with pytest.raises(ValueError, match="Unknown perceptual network"):
        perceptual.build_content_model("vgg16", weights="none")


def test_legacy_h5_file_named_like_the_keras_download_loads(tmp_path):
    # keras.applications ships its ImageNet weights in the legacy (Keras 2) HDF5 layout.
    import h5py
    from keras.src.legacy.saving import legacy_h5_format

    keras.utils.set_random_seed(2)
    vgg = keras.applications.VGG19(include_top=False, weights=None, input_shape=(None, None, 3))
    path = str(tmp_path / perceptual.NETWORKS["vgg54"].weights_file)
    with h5py.File(path, "w") as f:
        legacy_h5_format.save_weights_to_hdf5_group(f, vgg)

    model = perceptual.build_content_model("vgg54", weights=path)

    images = _hr_images(batch=1)
    pixels = (images.numpy() + 1.0) * 127.5
    cut = keras.Model(vgg.input, vgg.get_layer("block5_conv4").output)
    expected = cut(keras.applications.vgg19.preprocess_input(pixels)).numpy() / 12.75
    np.testing.assert_allclose(model(images).numpy(), expected, rtol=1e-4, atol=1e-4)
