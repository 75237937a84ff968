"""Perceptual feature extractors: weights from a file, random weights, the offline error."""

import dataclasses
import functools
import hashlib
import http.server
import logging
import os
import socket
import threading
import time

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


# -- --perceptual_weights=auto ------------------------------------------------------------------


def _save_keras_layout_vgg19(path, seed):
    """A random VGG19 saved like Keras' ImageNet no-top file (legacy HDF5); returns the model."""
    import h5py
    from keras.src.legacy.saving import legacy_h5_format

    keras.utils.set_random_seed(seed)
    vgg = keras.applications.VGG19(include_top=False, weights=None, input_shape=(None, None, 3))
    path.parent.mkdir(parents=True, exist_ok=True)
    with h5py.File(path, "w") as f:
        legacy_h5_format.save_weights_to_hdf5_group(f, vgg)
    return vgg


def _with_origin(monkeypatch, network, origin, weights_hash=None):
    """Points `network`'s download at `origin` (and its expected md5 at `weights_hash`)."""
    spec = perceptual.NETWORKS[network]
    changes = {"weights_origin": origin}
    if weights_hash is not None:
        changes["weights_hash"] = weights_hash
    monkeypatch.setitem(perceptual.NETWORKS, network, dataclasses.replace(spec, **changes))
    return perceptual.NETWORKS[network]


def test_auto_uses_the_file_cached_under_keras_home(tmp_path, monkeypatch, caplog):
    file_name = perceptual.NETWORKS["vgg19"].weights_file
    cached = tmp_path / "keras_home" / "models" / file_name
    vgg = _save_keras_layout_vgg19(cached, seed=3)
    monkeypatch.setenv("KERAS_HOME", str(tmp_path / "keras_home"))
    # A closed port: were the cache missed, nothing would come from the internet either.
    _with_origin(monkeypatch, "vgg19", "http://127.0.0.1:9/" + file_name)

    choice = perceptual.resolve_weights("vgg19", "auto")
    assert choice.path == str(cached)
    # A random network is not Keras' ImageNet file: used, but said so.
    assert not choice.imagenet
    assert "cached file" in choice.summary and "md5 differs" in choice.summary
    assert "md5 differs" in caplog.text
    caplog.clear()
    with caplog.at_level(logging.WARNING):
        model = perceptual.build_content_model("vgg19", choice, layers_=["conv1_2"])
    assert caplog.records == []  # resolved once: nothing is looked up or warned again

    images = _hr_images(batch=1, size=16)
    pixels = (images.numpy() + 1.0) * 127.5
    conv = keras.Model(vgg.input, vgg.get_layer("block1_conv1").output)
    # conv1_2 before its ReLU: block1_conv2's kernel on conv1_1's (ReLU) output.
    kernel, bias = vgg.get_layer("block1_conv2").get_weights()
    hidden = conv(keras.applications.vgg19.preprocess_input(pixels))
    expected = tf.nn.conv2d(hidden, kernel, 1, "SAME") + bias
    scale = perceptual.NETWORKS["vgg19"].feature_scale
    np.testing.assert_allclose(
        model(images).numpy(), expected.numpy() * scale, rtol=1e-4, atol=1e-4
    )

    # The same file with Keras' md5 is reported as ImageNet.
    _with_origin(monkeypatch, "vgg19", "http://127.0.0.1:9/x", perceptual._md5(cached))
    choice = perceptual.resolve_weights("vgg19", "auto")
    assert choice.imagenet and choice.summary == f"ImageNet (cached file {cached})"


@pytest.fixture
def silent_server():
    """A TCP port that accepts connections and never answers (a black-holed download)."""
    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen(8)
        yield f"http://127.0.0.1:{server.getsockname()[1]}/"


@pytest.mark.parametrize("origin", ["refused", "silent"])
def test_auto_offline_falls_back_fast_with_one_warning(
    tmp_path, monkeypatch, caplog, silent_server, origin
):
    base = "http://127.0.0.1:9/" if origin == "refused" else silent_server
    spec = _with_origin(monkeypatch, "vgg54", base + "vgg19_notop.h5")
    start = time.perf_counter()
    with caplog.at_level(logging.WARNING):
        choice = perceptual.resolve_weights("vgg54", "auto", cache_dir=str(tmp_path), timeout=1.0)
        model = perceptual.build_content_model("vgg54", choice)
    elapsed = time.perf_counter() - start
    assert elapsed < 5.0, elapsed  # the model build included
    assert choice.path is None and not choice.imagenet
    assert choice.summary.startswith("random (no ImageNet weights: ")
    if origin == "silent":
        assert "did not answer within 1 s" in choice.summary
    [record] = caplog.records  # exactly one warning line, saying what to do
    message = record.getMessage()
    assert record.levelno == logging.WARNING and "\n" not in message
    assert spec.weights_origin in message
    assert f"--perceptual_weights=/path/to/{spec.weights_file}" in message
    assert os.listdir(tmp_path / "models") == []  # no partial file left in the cache
    assert model.trainable_weights == []


def test_default_download_timeout_is_a_few_seconds():
    assert 1.0 <= perceptual.AUTO_DOWNLOAD_TIMEOUT_S <= 10.0


@pytest.fixture
def http_dir(tmp_path):
    """A local HTTP server over tmp_path/served; yields (its URL, the directory)."""
    served = tmp_path / "served"
    served.mkdir()
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(served))
    with http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler) as server:
        thread = threading.Thread(target=server.serve_forever, daemon=True)
        thread.start()
        yield f"http://127.0.0.1:{server.server_address[1]}/", served
        server.shutdown()


def test_auto_downloads_into_the_cache_and_refuses_a_wrong_md5(tmp_path, monkeypatch, http_dir):
    url, served = http_dir
    payload = np.random.default_rng(0).bytes(3 << 20)  # not a model: only fetched and hashed
    (served / "w.h5").write_bytes(payload)
    spec = _with_origin(monkeypatch, "vgg54", url + "w.h5", hashlib.md5(payload).hexdigest())
    cache = tmp_path / "cache"

    choice = perceptual.resolve_weights("vgg54", "auto", cache_dir=str(cache), timeout=2.0)
    target = cache / "models" / spec.weights_file
    assert choice.imagenet and choice.summary == f"ImageNet (downloaded file {target})"
    assert target.read_bytes() == payload
    # The next run finds it in the cache, the server gone or not.
    assert perceptual.resolve_weights("vgg54", "auto", cache_dir=str(cache)).path == str(target)

    _with_origin(monkeypatch, "vgg54", url + "w.h5", "0" * 32)  # e.g. a proxy's error page
    choice = perceptual.resolve_weights("vgg54", "auto", cache_dir=str(tmp_path / "c2"))
    assert choice.path is None and "wrong md5" in choice.summary
    assert os.listdir(tmp_path / "c2" / "models") == []


def test_imagenet_stays_strict_and_none_stays_random(tmp_path, monkeypatch):
    _with_origin(monkeypatch, "vgg54", "http://127.0.0.1:9/vgg19_notop.h5")
    with pytest.raises(perceptual.PerceptualWeightsError, match="--perceptual_weights="):
        perceptual.resolve_weights("vgg54", "imagenet", cache_dir=str(tmp_path))
    choice = perceptual.resolve_weights("vgg54", "none")
    assert choice.path is None and choice.summary == "random (--perceptual_weights=none)"
