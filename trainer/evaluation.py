"""PSNR/SSIM of a generator against bicubic: on a folder of image pairs, or on validation data.

Every upscaler here maps a uint8 [H, W, 3] LR image to a uint8 [H*s, W*s, 3] image, so a
trainer checkpoint, an exported SavedModel and bicubic are measured by exactly the same code.
Bicubic is tf.image.resize(method="bicubic") without antialias (upscaling needs none); on the
MATLAB-made LR files of Set5 it gives the published 28.42 dB.
"""

import dataclasses
import os
import re

import numpy as np
import tensorflow as tf
from PIL import Image

from data_prep import pairing
from serving import contract
from trainer import generator_store, input_pipeline, metrics, value_range

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp")


@dataclasses.dataclass(frozen=True)
class ImageResult:
    key: str
    width: int  # HR size
    height: int
    bicubic_psnr: float
    bicubic_ssim: float
    psnr: float | None = None  # None: bicubic only
    ssim: float | None = None


@dataclasses.dataclass(frozen=True)
class Report:
    images: list  # ImageResult, by key
    skipped: list  # (path, key or None, reason): files that did not form a usable pair

    def means(self):
        """{"bicubic": {"psnr", "ssim"}, "model": {...} or None}, averaged per image."""

        def mean(name):
            return float(np.mean([getattr(r, name) for r in self.images]))

        has_model = bool(self.images) and self.images[0].psnr is not None
        model = {"psnr": mean("psnr"), "ssim": mean("ssim")} if has_model else None
        return {
            "bicubic": {"psnr": mean("bicubic_psnr"), "ssim": mean("bicubic_ssim")},
            "model": model,
        }

    def to_dict(self):
        return {
            **self.means(),
            "images": [dataclasses.asdict(r) for r in self.images],
            "skipped": [{"path": p, "key": k, "reason": r} for p, k, r in self.skipped],
        }


def bicubic_upscale_uint8(lr_uint8, scale):
    """uint8 [N, h, w, 3] -> uint8 [N, h*s, w*s, 3], bicubic, rounded and clipped."""
    size = tf.shape(lr_uint8)[1:3] * scale
    upscaled = tf.image.resize(tf.cast(lr_uint8, tf.float32), size, method="bicubic")
    return tf.cast(tf.clip_by_value(tf.round(upscaled), 0.0, 255.0), tf.uint8)


def generator_upscaler(generator):
    """A uint8 -> uint8 upscale function of a Keras generator (LR [0, 1] -> HR [-1, 1])."""

    @tf.function(input_signature=[tf.TensorSpec([None, None, None, 3], tf.uint8)])
    def upscale(lr_uint8):
        sr = generator(value_range.lr_from_uint8(lr_uint8), training=False)
        return value_range.hr_to_uint8(sr)

    return lambda lr: upscale(lr[None])[0].numpy()


def checkpoint_upscaler(path):
    """(upscale_fn, scale, checkpoint prefix) of a trainer model_dir or a checkpoint prefix.

    A model_dir means its newest generator: the GAN phase's when there is one, else pretrain's.
    """
    generator, config, prefix = generator_store.load_generator(path)
    return generator_upscaler(generator), config.scale, prefix


def saved_model_upscaler(path):
    """The upscale function of an exported SavedModel's uint8 tensor signature."""
    if not tf.io.gfile.exists(os.path.join(path, "saved_model.pb")):
        raise FileNotFoundError(f"{path} holds no saved_model.pb: not a SavedModel directory.")
    loaded = tf.saved_model.load(path)
    if contract.TENSOR_SIGNATURE not in loaded.signatures:
        raise ValueError(
            f"SavedModel {path} has no {contract.TENSOR_SIGNATURE!r} signature "
            f"(it has {sorted(loaded.signatures)})."
        )
    signature = loaded.signatures[contract.TENSOR_SIGNATURE]

    def upscale(lr):
        outputs = signature(**{contract.TENSOR_INPUT: tf.constant(lr[None], tf.uint8)})
        return outputs[contract.TENSOR_OUTPUT][0].numpy()

    upscale.loaded = loaded  # keeps the restored variables alive with the function
    return upscale


def list_pairs(pairs_dir, scale, hr_regex=None, lr_regex=None) -> pairing.Pairing:
    """The (key, hr_path, lr_path) pairs of a flat folder, by data_prep's pairing rules.

    A file is LR when `lr_regex` matches its name, or (without one) when its name ends in
    `_LR` or `x{scale}` (DIV2K); every other image file is HR.
    """
    if not tf.io.gfile.isdir(pairs_dir):
        raise FileNotFoundError(f"--pairs_dir {pairs_dir} is not a directory.")
    names = sorted(
        n for n in tf.io.gfile.listdir(pairs_dir) if n.lower().endswith(IMAGE_EXTENSIONS)
    )
    hr_paths, lr_paths = [], []
    for name in names:
        path = os.path.join(pairs_dir, name)
        (lr_paths if _is_lr_name(name, scale, lr_regex) else hr_paths).append(path)
    return pairing.pair_paths(hr_paths, lr_paths, scale, hr_regex, lr_regex)


def _is_lr_name(name, scale, lr_regex):
    if lr_regex:
        return re.search(lr_regex, name) is not None
    # lr_key strips an LR marker (`_LR`, `x4`) from the stem; an unchanged stem is an HR name.
    return pairing.lr_key(name, scale) != os.path.splitext(name)[0]


def load_rgb(path):
    """A uint8 [H, W, 3] RGB array; grayscale and palette images are converted, alpha dropped."""
    with tf.io.gfile.GFile(path, "rb") as f, Image.open(f) as image:
        return np.asarray(image.convert("RGB"))


def _crop_hr(hr, lr, scale):
    """HR mod-cropped to LR * scale (bottom/right), or a ValueError naming the sizes."""
    height, width = lr.shape[0] * scale, lr.shape[1] * scale
    if not (height <= hr.shape[0] < height + scale and width <= hr.shape[1] < width + scale):
        raise ValueError(
            f"HR is {hr.shape[1]}x{hr.shape[0]}, LR {lr.shape[1]}x{lr.shape[0]}: "
            f"not a x{scale} pair"
        )
    return hr[:height, :width]


def score_image(key, hr, lr, scale, sr=None):
    """ImageResult of one pair and its upscaled image `sr` (None: bicubic only)."""
    hr = _crop_hr(hr, lr, scale)
    bicubic = bicubic_upscale_uint8(lr[None], scale)[0].numpy()
    bicubic_psnr, bicubic_ssim = metrics.psnr_ssim_y(bicubic, hr, shave=scale)
    result = ImageResult(
        key=key,
        width=hr.shape[1],
        height=hr.shape[0],
        bicubic_psnr=bicubic_psnr,
        bicubic_ssim=bicubic_ssim,
    )
    if sr is None:
        return result
    sr = np.asarray(sr)
    if sr.shape != hr.shape:
        raise ValueError(
            f"the model returned {sr.shape[1]}x{sr.shape[0]} for a "
            f"{lr.shape[1]}x{lr.shape[0]} input; expected x{scale}, "
            f"{hr.shape[1]}x{hr.shape[0]} (is --scale right?)"
        )
    model_psnr, model_ssim = metrics.psnr_ssim_y(sr, hr, shave=scale)
    return dataclasses.replace(result, psnr=model_psnr, ssim=model_ssim)


def evaluate_pairs(upscale_fn, pairs, scale, skipped=()) -> Report:
    """Per-image PSNR/SSIM (Y, `scale` pixels shaved) of a model and of bicubic.

    Args:
      upscale_fn: uint8 [h, w, 3] -> uint8 [h*s, w*s, 3], or None for bicubic only.
      pairs: (key, hr_path, lr_path) tuples, e.g. list_pairs(...).pairs.
      scale: the scale factor.
      skipped: already rejected (path, key, reason) entries to carry into the report.

    Returns:
      A Report. Pairs whose sizes do not match are listed in `skipped`, not dropped silently.
    """
    results, skipped = [], list(skipped)
    for key, hr_path, lr_path in pairs:
        hr, lr = load_rgb(hr_path), load_rgb(lr_path)
        try:
            sr = None if upscale_fn is None else upscale_fn(lr)
            results.append(score_image(key, hr, lr, scale, sr))
        except ValueError as e:
            skipped.append((lr_path, key, str(e)))
    if not results:
        raise ValueError(
            f"No usable image pair among {len(pairs)} pairs "
            f"({len(skipped)} files skipped: {skipped[:3]})."
        )
    return Report(images=results, skipped=skipped)


def _uint8_examples(dataset):
    """(key, hr uint8, lr uint8) of every example of a make_validation_dataset() dataset."""
    for batch in dataset:
        # Validation data was decoded from uint8, so these conversions are exact.
        lr = tf.cast(tf.round(batch["lr"] * 255.0), tf.uint8).numpy()
        hr = value_range.hr_to_uint8(batch["hr"]).numpy()
        for i, key in enumerate(batch["key"].numpy()):
            yield key.decode(), hr[i], lr[i]


def evaluate_dataset(upscale_fn, data_dir, split="validation") -> Report:
    """evaluate_pairs on a split of a data_prep dataset (full images) instead of a folder."""
    scale = input_pipeline.open_dataset(data_dir, split=split).scale
    dataset = input_pipeline.make_validation_dataset(data_dir, split=split)
    results = []
    for key, hr, lr in _uint8_examples(dataset):
        sr = None if upscale_fn is None else upscale_fn(lr)
        results.append(score_image(key, hr, lr, scale, sr))
    if not results:
        raise ValueError(f"Split {split!r} of {data_dir} has no examples.")
    return Report(images=results, skipped=[])


def evaluate_validation(generator, dataset, scale):
    """Mean PSNR/SSIM of `generator` and of bicubic on a make_validation_dataset() dataset.

    Returns:
      {"psnr", "ssim", "bicubic_psnr", "bicubic_ssim"}: per-image averages, `scale` px shaved.
    """

    @tf.function(input_signature=[tf.TensorSpec([None, None, None, 3], tf.float32)])
    def upscale(lr):
        return value_range.hr_to_uint8(generator(lr, training=False))

    results = []
    for batch in dataset:
        # The whole batch goes through the generator at once; metrics are per image.
        sr = upscale(batch["lr"]).numpy()
        examples = _uint8_examples([batch])
        results.extend(
            score_image(key, hr, lr, scale, sr[i]) for i, (key, hr, lr) in enumerate(examples)
        )
    if not results:
        raise ValueError("The validation dataset is empty.")
    means = Report(images=results, skipped=[]).means()
    return {
        "psnr": means["model"]["psnr"],
        "ssim": means["model"]["ssim"],
        "bicubic_psnr": means["bicubic"]["psnr"],
        "bicubic_ssim": means["bicubic"]["ssim"],
    }
