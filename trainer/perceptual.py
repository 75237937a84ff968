"""Frozen ImageNet feature extractors for the SRGAN content (perceptual) loss.

  vgg54:       VGG19 cut at block5_conv4 (the paper's phi_5,4), features divided by 12.75 so the
               content loss has the same order of magnitude as a pixel MSE (Ledig et al. 2017).
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
import logging
import warnings

import keras
import tensorflow as tf
from keras import layers

_KERAS_WEIGHTS_URL = "https://storage.googleapis.com/tensorflow/keras-applications/"


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
        if self.network == "vgg54":
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


def _resolve_weights(network, weights, cache_dir):
    if weights == "imagenet":
        return download_imagenet_weights(network, cache_dir)
    if weights == "none":
        logging.warning(
            "Perceptual network %s has RANDOM weights (weights='none'): the content "
            "loss is meaningless except in tests.",
            network,
        )
        return None
    if not tf.io.gfile.exists(weights):
        raise PerceptualWeightsError(
            f"Perceptual weights file {weights} does not exist (expected 'imagenet', 'none' or "
            f"a path to {_spec(network).weights_file})."
        )
    return weights


def build_content_model(network="vgg54", weights="imagenet", cache_dir=None):
    """The frozen feature extractor of the content loss.

    Args:
      network: "vgg54" (VGG19 block5_conv4 / 12.75) or "resnet152v2" (conv2_block3_out).
      weights: "imagenet" (Keras download, cached), "none" (random; tests only, logs a warning)
        or the path of a weights file for the network without its top (.h5 or .weights.h5).
      cache_dir: download cache for "imagenet" (default: Keras' ~/.keras).

    Returns:
      A non-trainable keras.Model: [N, H, W, 3] in [-1, 1] -> float32 [N, H/s, W/s, C] features,
      float32 even under a mixed-precision policy.

    Raises:
      PerceptualWeightsError: the weights cannot be downloaded, found or loaded.
    """
    spec = _spec(network)
    weights_path = _resolve_weights(network, weights, cache_dir)
    backbone = _build_backbone(spec, weights_path)
    inputs = keras.Input(shape=(None, None, 3), name="hr_range_images", dtype="float32")
    x = ImageNetPreprocess(network, dtype="float32")(inputs)
    cut = keras.Model(backbone.input, backbone.get_layer(spec.layer).output)
    features = cut(x)
    # The scale is applied in float32: VGG54 activations reach the thousands.
    features = layers.Rescaling(spec.feature_scale, dtype="float32", name="features")(features)
    model = keras.Model(inputs, features, name=f"{network}_content")
    model.trainable = False
    return model


def content_loss(content_model, hr, sr):
    """Per-example mean squared feature difference, float32 [B].

    HR and SR go through the network as one batch (one pass, better device utilisation).
    """
    batch = tf.shape(hr)[0]
    images = tf.concat([tf.cast(hr, tf.float32), tf.cast(sr, tf.float32)], axis=0)
    features = content_model(images, training=False)
    hr_features, sr_features = features[:batch], features[batch:]
    return tf.reduce_mean(tf.square(hr_features - sr_features), axis=[1, 2, 3])
