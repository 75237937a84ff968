"""Frozen ImageNet feature extractors for the SRGAN content (perceptual) loss.

  vgg54:       VGG19 cut at block5_conv4 (the paper's phi_5,4), features divided by 12.75 so the
               content loss has the same order of magnitude as a pixel MSE (Ledig et al. 2017).
  vgg19:       VGG19 convs taken BEFORE their ReLU (ESRGAN, Wang et al. 2018: conv5_4; Real-ESRGAN:
               conv1_2 .. conv5_4 with per-layer weights), named conv<block>_<conv> as in BasicSR.
               Keras' VGG19 weights are the original Caffe ones (BGR, [0, 255] minus the mean)
               while BasicSR's are torchvision's (RGB [0, 1] divided by the ImageNet std ~0.226),
               so the features are multiplied by 1 / (255 * 0.226) to bring them to the input
               scale ESRGAN's loss weights were set for. That factor is an input-range
               equivalence, not a measurement on the two sets of weights.
  resnet152v2: ResNet152V2 cut at conv2_block3_out (the seed notebook's network, as an option).
               conv2_block3_out is the output of the first residual stage (3 bottleneck blocks,
               stride 8, 256 channels), the standard "C2" tap of feature pyramids: texture-level
               features about as deep as VGG's block3/4, where the later stages (stride 16-32)
               encode mostly semantics and cost the rest of the 58M-parameter network per step.
               The cut model holds only the layers up to it.

Both models take HR-range images ([-1, 1], see trainer.value_range) and do the network's own
ImageNet preprocessing inside, so callers never repeat it.
"""

import dataclasses
import hashlib
import json
import logging
import os
import posixpath
import shutil
import tempfile
import threading
import urllib.parse
import urllib.request
import warnings

import keras
import tensorflow as tf
from keras import layers

_KERAS_WEIGHTS_URL = "https://storage.googleapis.com/tensorflow/keras-applications/"

# --perceptual_weights values besides a file path.
AUTO, IMAGENET, NONE = "auto", "imagenet", "none"
# "auto" gives up on a download that has not started answering within this many seconds: an
# offline machine (or one whose firewall drops packets) must fall back, not hang.
AUTO_DOWNLOAD_TIMEOUT_S = 5.0
# What a training phase used, written into MODEL/<phase>/ (demo.py reads it).
RECORD_FILENAME = "perceptual_weights.json"


class PerceptualWeightsError(ValueError):
    """The requested feature-extractor weights cannot be obtained or loaded."""


@dataclasses.dataclass(frozen=True)
class NetworkSpec:
    builder: str  # keras.applications constructor name
    layer: str  # output layer of the cut
    feature_scale: float  # features are multiplied by this
    weights_file: str  # Keras' ImageNet no-top weights file name
    weights_origin: str  # where keras.applications downloads it from
    weights_hash: str  # md5 as in keras.applications
    criterion: str = "mse"  # the reference feature distance (config.LossConfig default)
    default_layers: tuple = ()  # ((layer, weight), ...) when the layers are chosen; () fixed


_VGG19_WEIGHTS_FILE = "vgg19_weights_tf_dim_ordering_tf_kernels_notop.h5"
# Convolutions per VGG19 block: conv<block>_<i> exists for i <= this.
_VGG19_BLOCK_CONVS = {1: 2, 2: 2, 3: 4, 4: 4, 5: 4}


NETWORKS = {
    "vgg54": NetworkSpec(
        builder="VGG19",
        layer="block5_conv4",
        feature_scale=1.0 / 12.75,
        weights_file="vgg19_weights_tf_dim_ordering_tf_kernels_notop.h5",
        weights_origin=_KERAS_WEIGHTS_URL
        + "vgg19/vgg19_weights_tf_dim_ordering_tf_kernels_notop.h5",
        weights_hash="253f8cb515780f3b799900260a226db6",
    ),
    "vgg19": NetworkSpec(
        builder="VGG19",
        layer="",
        feature_scale=1.0 / (255.0 * 0.226),
        weights_file=_VGG19_WEIGHTS_FILE,
        weights_origin=_KERAS_WEIGHTS_URL + "vgg19/" + _VGG19_WEIGHTS_FILE,
        weights_hash="253f8cb515780f3b799900260a226db6",
        criterion="l1",
        default_layers=(("conv5_4", 1.0),),
    ),
    "resnet152v2": NetworkSpec(
        builder="ResNet152V2",
        layer="conv2_block3_out",
        feature_scale=1.0,
        weights_file="resnet152v2_weights_tf_dim_ordering_tf_kernels_notop.h5",
        weights_origin=_KERAS_WEIGHTS_URL
        + "resnet/resnet152v2_weights_tf_dim_ordering_tf_kernels_notop.h5",
        weights_hash="ed17cf2e0169df9d443503ef94b23b33",
    ),
}


class ImageNetPreprocess(layers.Layer):
    """HR range [-1, 1] -> the network's ImageNet input convention (via [0, 255] RGB)."""

    def __init__(self, network, **kwargs):
        super().__init__(**kwargs)
        self.network = network

    def call(self, images):
        pixels = (tf.cast(images, tf.float32) + 1.0) * 127.5
        if self.network in ("vgg54", "vgg19"):
            # Caffe style: RGB -> BGR, minus the ImageNet BGR mean, no scaling.
            return keras.applications.vgg19.preprocess_input(pixels)
        # ResNetV2: [0, 255] -> [-1, 1].
        return keras.applications.resnet_v2.preprocess_input(pixels)

    def get_config(self):
        return {**super().get_config(), "network": self.network}


def download_imagenet_weights(network, cache_dir=None):
    """Fetches Keras' ImageNet no-top weights file (cached); PerceptualWeightsError when offline."""
    spec = _spec(network)
    try:
        return keras.utils.get_file(
            spec.weights_file,
            spec.weights_origin,
            cache_subdir="models",
            file_hash=spec.weights_hash,
            cache_dir=cache_dir,
        )
    except Exception as e:  # noqa: BLE001 - urllib/HTTP/hash errors all mean "no weights"
        raise PerceptualWeightsError(
            f"Could not download the ImageNet weights of {network} ({type(e).__name__}: {e}). "
            f"On a machine with internet access download {spec.weights_origin} "
            f"(file {spec.weights_file}), copy it here and pass "
            f"--perceptual_weights=/path/to/{spec.weights_file}."
        ) from None


def _spec(network):
    if network not in NETWORKS:
        raise ValueError(
            f"Unknown perceptual network {network!r}; choose one of {sorted(NETWORKS)}."
        )
    return NETWORKS[network]


def _build_backbone(spec, weights_path):
    builder = getattr(keras.applications, spec.builder)
    backbone = builder(include_top=False, weights=None, input_shape=(None, None, 3))
    if weights_path is not None:
        try:
            # Keras 3 only warns when parts of a .weights.h5 file do not match: a partial load
            # would silently train against half-random features, so warnings are errors here.
            with warnings.catch_warnings():
                warnings.simplefilter("error")
                backbone.load_weights(weights_path)
        except Exception as e:  # noqa: BLE001 - h5py/Keras raise many types for a bad file
            raise PerceptualWeightsError(
                f"Could not load perceptual weights from {weights_path} into {spec.builder} "
                f"without its top ({type(e).__name__}: {e}). Pass Keras' no-top file "
                f"{spec.weights_file} or weights saved from the same network."
            ) from None
    return backbone


@dataclasses.dataclass(frozen=True)
class WeightsChoice:
    """Which weights a content model gets, decided once per run (resolve_weights).

    Attributes:
      network: the NETWORKS key.
      requested: the --perceptual_weights value ("auto", "imagenet", "none" or a path).
      path: the weights file to load; None: random features.
      imagenet: the file's md5 is Keras' ImageNet file's.
      summary: one line for logs and the demo, e.g. "ImageNet (cached file ...)" or
        "random (no ImageNet weights: ...)".
    """

    network: str
    requested: str
    path: str | None
    imagenet: bool
    summary: str

    def to_json(self):
        return json.dumps(dataclasses.asdict(self), indent=2)


def keras_cache_dirs(cache_dir=None):
    """Where Keras keeps downloads: `cache_dir`, else $KERAS_HOME (read now, not at import as
    Keras does), Keras' home, ~/.keras and /tmp/.keras (get_file's fallback), without repeats."""
    if cache_dir is not None:
        return [cache_dir]
    candidates = [
        os.environ.get("KERAS_HOME"),
        keras.src.backend.config.keras_home(),
        os.path.join(os.path.expanduser("~"), ".keras"),
        os.path.join(tempfile.gettempdir(), ".keras"),
    ]
    return list(dict.fromkeys(os.path.expanduser(c) for c in candidates if c))


def _md5(path):
    digest = hashlib.md5()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _file_choice(spec, network, requested, path, how):
    """A WeightsChoice for an existing file; `how` says where it came from ("cached file")."""
    imagenet = _md5(path) == spec.weights_hash
    if imagenet:
        summary = f"ImageNet ({how} {path})"
    else:
        summary = f"weights from {how} {path} (not Keras' ImageNet file: its md5 differs)"
    return WeightsChoice(network, requested, path, imagenet, summary)


def _urlopen_within(url, timeout):
    """urlopen whose connection, DNS look-up included, must answer within `timeout` seconds.

    urlopen's own timeout covers socket operations, not getaddrinfo, so the connection is made
    in a daemon thread the caller stops waiting for.

    Raises:
      TimeoutError: no answer in time.
      OSError: urllib's errors (URLError, HTTPError: no network, refused, 404, ...).
    """
    result = {}

    def connect():
        try:
            result["response"] = urllib.request.urlopen(url, timeout=timeout)  # noqa: S310
        except Exception as e:  # noqa: BLE001 - handed to the caller
            result["error"] = e

    thread = threading.Thread(target=connect, name="perceptual-weights-download", daemon=True)
    thread.start()
    thread.join(timeout)
    if "response" in result:
        return result["response"]
    host = urllib.parse.urlsplit(url).netloc
    if "error" in result and not isinstance(result["error"], TimeoutError):
        raise result["error"]
    # Either this wait or urlopen's own socket timeout (a server that accepts and stays silent).
    raise TimeoutError(f"{host} did not answer within {timeout:g} s")


def _download(url, target, timeout):
    """Downloads `url` to `target` through a temporary file (no half file is ever `target`)."""
    os.makedirs(os.path.dirname(target), exist_ok=True)
    with _urlopen_within(url, timeout) as response:
        fd, partial = tempfile.mkstemp(dir=os.path.dirname(target), suffix=".part")
        try:
            with os.fdopen(fd, "wb") as f:
                shutil.copyfileobj(response, f, 1 << 20)
            os.replace(partial, target)
        finally:
            if os.path.exists(partial):
                os.remove(partial)


def _auto_weights(network, cache_dir, timeout):
    """ "auto": the Keras cache, else a download with a short timeout, else random features."""
    spec = _spec(network)
    dirs = keras_cache_dirs(cache_dir)
    for directory in dirs:
        path = os.path.join(directory, "models", spec.weights_file)
        if os.path.isfile(path):
            choice = _file_choice(spec, network, AUTO, path, "cached file")
            if not choice.imagenet:
                logging.warning("Perceptual network %s: %s.", network, choice.summary)
            return choice
    target = os.path.join(dirs[0], "models", spec.weights_file)
    try:
        _download(spec.weights_origin, target, timeout)
    except Exception as e:  # noqa: BLE001 - urllib/socket/file errors all mean "no weights"
        reason = f"not in {' or '.join(os.path.join(d, 'models') for d in dirs)}; download failed: "
        reason += f"{type(e).__name__}: {e}"
    else:
        choice = _file_choice(spec, network, AUTO, target, "downloaded file")
        if choice.imagenet:
            return choice
        os.remove(target)  # a proxy's error page, a truncated file: never cache it.
        reason = f"the download from {spec.weights_origin} has the wrong md5"
    logging.warning(
        "Perceptual network %s uses RANDOM features (no ImageNet weights: %s). For a meaningful "
        "content loss download %s on a machine with internet access and pass "
        "--perceptual_weights=/path/to/%s (or copy it to %s).",
        network,
        reason,
        spec.weights_origin,
        spec.weights_file,
        target,
    )
    return WeightsChoice(network, AUTO, None, False, f"random (no ImageNet weights: {reason})")


def resolve_weights(network, weights, cache_dir=None, timeout=AUTO_DOWNLOAD_TIMEOUT_S):
    """Decides which weights the content model of `network` gets.

    Args:
      network: a NETWORKS key.
      weights: "auto" (the Keras cache, else a download that must answer within `timeout`
        seconds, else random features with one warning), "imagenet" (Keras' download, cached;
        an error when unavailable), "none" (random: tests only, one warning) or a file path.
      cache_dir: Keras' cache directory (default: $KERAS_HOME, ~/.keras, /tmp/.keras).
      timeout: "auto" only: seconds the download may take to start answering.

    Returns:
      A WeightsChoice (build_content_model takes it in place of `weights`).

    Raises:
      PerceptualWeightsError: "imagenet" cannot be downloaded, or the file does not exist.
    """
    spec = _spec(network)
    if weights == AUTO:
        return _auto_weights(network, cache_dir, timeout)
    if weights == IMAGENET:
        path = download_imagenet_weights(network, cache_dir)
        return WeightsChoice(network, weights, path, True, f"ImageNet (Keras file {path})")
    if weights == NONE:
        logging.warning(
            "Perceptual network %s has RANDOM weights (weights='none'): the content "
            "loss is meaningless except in tests.",
            network,
        )
        return WeightsChoice(network, weights, None, False, "random (--perceptual_weights=none)")
    if not tf.io.gfile.exists(weights):
        raise PerceptualWeightsError(
            f"Perceptual weights file {weights} does not exist (expected 'auto', 'imagenet', "
            f"'none' or a path to {spec.weights_file})."
        )
    if not os.path.isfile(weights):  # a gs:// or other tf.io.gfile path: not hashed.
        return WeightsChoice(network, weights, weights, False, f"weights from file {weights}")
    return _file_choice(spec, network, weights, weights, "file")


def write_record(directory, choice):
    """Writes `choice` as directory/RECORD_FILENAME (what a training phase used)."""
    tf.io.gfile.makedirs(directory)
    with tf.io.gfile.GFile(posixpath.join(directory, RECORD_FILENAME), "w") as f:
        f.write(choice.to_json())


def _keras_vgg19_name(layer):
    """BasicSR's conv<block>_<i> -> Keras' block<block>_conv<i>."""
    block, _, index = layer[len("conv") :].partition("_")
    return f"block{block}_conv{index}"


def check_layers(network, layer_weights):
    """Checks ((layer, weight), ...) for `network` (config.LossConfig calls it).

    Raises:
      ValueError: an unknown layer, a repeated one, a negative weight, or no positive weight.
    """
    if network != "vgg19":
        return
    names = [name for name, _ in layer_weights]
    for name, weight in layer_weights:
        block, _, index = name[len("conv") :].partition("_")
        if not (
            name.startswith("conv")
            and block.isdigit()
            and index.isdigit()
            and 1 <= int(index) <= _VGG19_BLOCK_CONVS.get(int(block), 0)
        ):
            raise ValueError(
                f"Unknown VGG19 layer {name!r}: use conv<block>_<i>, blocks 1-2 with i <= 2 "
                "and blocks 3-5 with i <= 4 (e.g. conv5_4)."
            )
        if weight < 0:
            raise ValueError(f"Perceptual layer {name} has a negative weight {weight}.")
    if len(set(names)) != len(names):
        raise ValueError(f"Perceptual layers repeat a layer: {names}.")
    if not any(weight > 0 for _, weight in layer_weights):
        raise ValueError(f"Perceptual layers need a positive weight: {list(layer_weights)}.")


_VGG19_FILTERS = {1: 64, 2: 128, 3: 256, 4: 512, 5: 512}


def _vgg19_preactivation(backbone, layer_names):
    """VGG19 with each conv's ReLU as a separate layer, cut after the deepest wanted conv.

    Returns a model whose outputs are the wanted convs' outputs before their ReLU, in the order
    of `layer_names`; Keras' layer names, weights copied from `backbone` layer by layer (None:
    random weights, and the full network is never built).
    """
    wanted = {_keras_vgg19_name(name) for name in layer_names}
    inputs = keras.Input(shape=(None, None, 3))
    x, taps = inputs, {}
    for block, count in _VGG19_BLOCK_CONVS.items():
        if block > 1:
            x = layers.MaxPooling2D(2, 2, name=f"block{block - 1}_pool")(x)
        for index in range(1, count + 1):
            name = f"block{block}_conv{index}"
            conv = layers.Conv2D(_VGG19_FILTERS[block], 3, padding="same", name=name)
            taps[name] = conv(x)
            if backbone is not None:
                conv.set_weights(backbone.get_layer(name).get_weights())
            if wanted <= set(taps):
                return keras.Model(inputs, [taps[_keras_vgg19_name(n)] for n in layer_names])
            x = layers.ReLU()(taps[name])
    raise AssertionError("unreachable: check_layers accepts VGG19 convs only")


def build_content_model(network="vgg54", weights=AUTO, cache_dir=None, layers_=None):
    """The frozen feature extractor of the content loss.

    Args:
      network: "vgg54" (VGG19 block5_conv4 / 12.75), "resnet152v2" (conv2_block3_out) or
        "vgg19" (the convs named in `layers_`, before activation).
      weights: "auto" (ImageNet when Keras has or can download them, else random with one
        warning), "imagenet" (Keras download, cached; strict), "none" (random; tests only, logs
        a warning), the path of a weights file for the network without its top (.h5 or
        .weights.h5), or a WeightsChoice from resolve_weights (nothing is resolved again).
      cache_dir: Keras' download cache (default: $KERAS_HOME or ~/.keras).
      layers_: vgg19 only: the layer names (conv5_4, ...); None: the network's default.

    Returns:
      A non-trainable keras.Model: [N, H, W, 3] in [-1, 1] -> float32 [N, H/s, W/s, C] features
      (vgg19: a list, one per layer), float32 even under a mixed-precision policy.

    Raises:
      PerceptualWeightsError: the weights cannot be downloaded, found or loaded.
    """
    spec = _spec(network)
    if not isinstance(weights, WeightsChoice):
        weights = resolve_weights(network, weights, cache_dir)
    elif weights.network != network:
        raise ValueError(f"Weights resolved for {weights.network}, not {network}.")
    weights_path = weights.path
    inputs = keras.Input(shape=(None, None, 3), name="hr_range_images", dtype="float32")
    x = ImageNetPreprocess(network, dtype="float32")(inputs)
    if spec.default_layers:
        names = list(layers_) if layers_ else [name for name, _ in spec.default_layers]
        check_layers(network, [(name, 1.0) for name in names])
        backbone = None if weights_path is None else _build_backbone(spec, weights_path)
        taps = _vgg19_preactivation(backbone, names)(x)
        taps = taps if isinstance(taps, list | tuple) else [taps]
        features = [
            layers.Rescaling(spec.feature_scale, dtype="float32", name=f"features_{name}")(tap)
            for name, tap in zip(names, taps, strict=True)
        ]
    else:
        backbone = _build_backbone(spec, weights_path)
        cut = keras.Model(backbone.input, backbone.get_layer(spec.layer).output)
        # The scale is applied in float32: VGG54 activations reach the thousands.
        features = layers.Rescaling(spec.feature_scale, dtype="float32", name="features")(cut(x))
    model = keras.Model(inputs, features, name=f"{network}_content")
    model.trainable = False
    return model


def content_loss(content_model, hr, sr, criterion="mse", layer_weights=None):
    """Per-example feature distance, float32 [B]: sum over layers of weight * mean distance.

    HR and SR go through the network as one batch (one pass, better device utilisation).

    Args:
      content_model: from build_content_model (one feature map or a list of them).
      hr: HR-range images.
      sr: the generator's output.
      criterion: "mse" (mean squared) or "l1" (mean absolute) difference per feature map.
      layer_weights: one weight per feature map (None: all 1), as BasicSR's PerceptualLoss.
    """
    batch = tf.shape(hr)[0]
    images = tf.concat([tf.cast(hr, tf.float32), tf.cast(sr, tf.float32)], axis=0)
    features = content_model(images, training=False)
    if not isinstance(features, list | tuple):
        features = [features]
    weights = [1.0] * len(features) if layer_weights is None else list(layer_weights)
    if len(weights) != len(features):
        raise ValueError(f"{len(weights)} layer weights for {len(features)} feature maps.")
    distance = {"mse": tf.square, "l1": tf.abs}.get(criterion)
    if distance is None:
        raise ValueError(f"perceptual criterion must be 'mse' or 'l1', got {criterion!r}.")
    total = 0.0
    for weight, feature in zip(weights, features, strict=True):
        diff = feature[:batch] - feature[batch:]
        total += weight * tf.reduce_mean(distance(diff), axis=[1, 2, 3])
    return total
