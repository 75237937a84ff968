"""Writes a fixed "real-world" benchmark: each HR image degraded once by the Real-ESRGAN pipeline.

  python -m trainer.realworld_set --hr_dir=../shared/data/Set14_x4 --output_dir=DIR --seed=0

Every HR image of --hr_dir (names without an LR marker: `x_HR.png`, `0001.png`; files named as
LR are skipped) is mod-cropped to a multiple of --scale and degraded ONCE, whole, with a seed
derived from --seed and the pair key (a hash of the name), so adding or removing files does not
change the others, and a second run writes the same bytes. The output is the flat layout
of ../shared/data/Set14_x4 that `srgan-evaluate --pairs_dir=DIR` reads: DIR/<key>_HR.png (the
cropped clean HR, no unsharp masking) and DIR/<key>_LR.png.
"""

import hashlib
import os
import sys

import srgan_cli

srgan_cli.quiet_console()  # before TensorFlow is imported
srgan_cli.import_tensorflow()  # without its C++ start-up lines

import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402
from absl import app, flags  # noqa: E402

from data_prep import images, pairing  # noqa: E402
from trainer import degradations, evaluation  # noqa: E402


def _define_flags():
    """The command line's flags, defined only when this module runs as the script: importing it
    for write_set must not register a --scale, which would clash with trainer.evaluate's (absl
    raises DuplicateFlagError when one process, such as a test run, imports both)."""
    flags.DEFINE_string("hr_dir", None, "Folder of HR images (LR-named files skipped).")
    flags.DEFINE_string("output_dir", None, "Folder to write <key>_HR/_LR.png into.")
    flags.DEFINE_integer("seed", 0, "Run seed; each image's seed folds in its key.")
    flags.DEFINE_integer("scale", 4, f"HR side / LR side, one of {degradations.SCALES}.")


def image_seed(seed, key):
    """[2] int64 stateless seed of one image: (seed, first 8 bytes of sha256(key)), so the
    seed depends on this image's name only."""
    digest = int.from_bytes(hashlib.sha256(key.encode("utf-8")).digest()[:8], "big") >> 1
    return tf.constant([seed, digest], tf.int64)


def hr_paths(hr_dir, scale):
    """Sorted HR image paths of a flat folder (LR-named files, by the evaluator's rule, out)."""
    if not tf.io.gfile.isdir(hr_dir):
        raise FileNotFoundError(f"--hr_dir {hr_dir} is not a directory.")
    names = sorted(n for n in tf.io.gfile.listdir(hr_dir) if images.is_image_name(n))
    paths = [os.path.join(hr_dir, n) for n in names if not evaluation._is_lr_name(n, scale, None)]
    if not paths:
        raise ValueError(f"--hr_dir {hr_dir} holds no HR images.")
    return paths


def degrade_image(pixels, seed, config):
    """(lr, hr) uint8 pixels: `pixels` mod-cropped to the scale, degraded once with `seed`."""
    hr = images.mod_crop(pixels, config.scale)
    lr, _ = degradations.degrade(tf.constant(hr[None], tf.float32) / 255.0, seed, config)
    lr = np.round(lr[0].numpy() * 255.0).astype(np.uint8)  # already on the 1/255 grid
    return lr, hr


def write_set(hr_dir, output_dir, seed, scale):
    """Writes output_dir/<key>_HR.png and <key>_LR.png for every HR image; returns the keys."""
    config = degradations.DegradationConfig(scale=scale, usm_target=False)
    tf.io.gfile.makedirs(output_dir)
    keys = []
    for path in hr_paths(hr_dir, scale):
        key = pairing.hr_key(path)
        pixels = evaluation.read_rgb(path)
        lr, hr = degrade_image(pixels, image_seed(seed, key), config)
        for suffix, image in (("HR", hr), ("LR", lr)):
            with tf.io.gfile.GFile(os.path.join(output_dir, f"{key}_{suffix}.png"), "wb") as f:
                f.write(images.encode_png(image))
        keys.append(key)
    return keys


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"Unexpected arguments: {argv[1:]}")
    args = flags.FLAGS
    try:
        if not args.hr_dir or not args.output_dir:
            raise ValueError("Pass --hr_dir and --output_dir.")
        keys = write_set(args.hr_dir, args.output_dir, args.seed, args.scale)
    except (ValueError, FileNotFoundError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(f"wrote {len(keys)} LR/HR pairs (x{args.scale}, seed {args.seed}) to {args.output_dir}")
    return 0


if __name__ == "__main__":
    _define_flags()
    app.run(main)
