"""PSNR/SSIM of a generator against bicubic: on a folder of image pairs, or on validation data.

Every upscaler here maps a uint8 [H, W, 3] LR image to a uint8 [H*s, W*s, 3] image, so a
trainer checkpoint, an exported SavedModel (trainer/evaluate.py wraps its signature) and bicubic
are measured by exactly the same code. Bicubic is models.bicubic_upscale_uint8; image files are
decoded by data_prep.images.decode_rgb, the rule data prep uses.
"""

import dataclasses
import os
import re

import numpy as np
import tensorflow as tf

from data_prep import images, pairing
from trainer import generator_store, input_pipeline, metrics, models, value_range


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


def generator_upscaler(generator):
    """A uint8 [h, w, 3] -> uint8 [h*s, w*s, 3] upscale function of a Keras generator."""

    @tf.function(input_signature=[tf.TensorSpec([None, None, None, 3], tf.uint8)])
    def upscale(lr_uint8):
        return value_range.generate_uint8(generator, lr_uint8)

    return lambda lr: upscale(lr[None])[0].numpy()


def checkpoint_upscaler(path, weights=None):
    """(upscale_fn, GeneratorConfig, checkpoint prefix) of a trainer model_dir or a prefix.

    A model_dir means its newest generator: the GAN phase's when there is one, else pretrain's.
    The GeneratorConfig (generator.json) carries the model's scale. `weights`: "ema", "raw" or
    None (the EMA when the checkpoint has one; generator_store.load_generator).
    """
    generator, config, prefix = generator_store.load_generator(path, weights)
    return generator_upscaler(generator), config, prefix


def list_pairs(pairs_dir, scale, hr_regex=None, lr_regex=None) -> pairing.Pairing:
    """The (key, hr_path, lr_path) pairs of a flat folder, by data_prep's pairing rules.

    A file is LR when `lr_regex` matches its name, or (without one) when its name ends in
    `_LR` or `x{scale}` (DIV2K); every other image file is HR.
    """
    if not tf.io.gfile.isdir(pairs_dir):
        raise FileNotFoundError(f"--pairs_dir {pairs_dir} is not a directory.")
    names = sorted(
        n for n in tf.io.gfile.listdir(pairs_dir) if n.lower().endswith(images.IMAGE_EXTENSIONS)
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


def read_rgb(path):
    """uint8 [H, W, 3] pixels of an image file (local or gs://) by the one decode rule.

    data_prep.images.decode_rgb: 16-bit images are scaled (not clipped), grayscale and palette
    images expanded, alpha dropped, exactly as data prep reads them.
    """
    with tf.io.gfile.GFile(path, "rb") as f:
        return images.decode_rgb(f.read()).pixels


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
    bicubic = models.bicubic_upscale_uint8(lr[None], scale)[0].numpy()
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
            f"{hr.shape[1]}x{hr.shape[0]}"
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
        try:
            hr, lr = read_rgb(hr_path), read_rgb(lr_path)
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


def _examples(batch):
    """(key, hr uint8, lr uint8) of each example of a make_validation_dataset() batch."""
    lr, hr = batch["lr"].numpy(), batch["hr"].numpy()
    for i, key in enumerate(batch["key"].numpy()):
        yield key.decode(), hr[i], lr[i]


def evaluate_dataset(upscale_fn, source: input_pipeline.DataSource, split="validation") -> Report:
    """evaluate_pairs on a split of a data_prep dataset (full images) instead of a folder."""
    results = []
    for batch in input_pipeline.make_validation_dataset(source, split=split):
        for key, hr, lr in _examples(batch):
            sr = None if upscale_fn is None else upscale_fn(lr)
            results.append(score_image(key, hr, lr, source.scale, sr))
    if not results:
        raise ValueError(f"Split {split!r} of {source.data_dir} has no examples.")
    return Report(images=results, skipped=[])


def evaluate_validation(generator, dataset, scale):
    """Mean PSNR/SSIM of `generator` and of bicubic on a make_validation_dataset() dataset.

    Returns:
      {"psnr", "ssim", "bicubic_psnr", "bicubic_ssim"}: per-image averages, `scale` px shaved.
    """

    @tf.function(input_signature=[tf.TensorSpec([None, None, None, 3], tf.uint8)])
    def upscale(lr_uint8):
        return value_range.generate_uint8(generator, lr_uint8)

    results = []
    for batch in dataset:
        # The whole batch goes through the generator at once; metrics are per image.
        sr = upscale(batch["lr"]).numpy()
        results.extend(
            score_image(key, hr, lr, scale, sr[i])
            for i, (key, hr, lr) in enumerate(_examples(batch))
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
