"""A grid of what the model is trained on: N Real-ESRGAN degradations of one image.

  python -m trainer.degradation_samples --image=PATH --output=grid.png --num=8 --seed=0 --scale=4

Row i is (LR of draw i, upscaled nearest to the HR size | the HR target), the target unsharp
masked as in training (--nousm_target for the plain HR). Draw i uses step_seed(seed, i, 0),
the seed the trainer would use at step i on replica 0. The image is mod-cropped to the scale
and, if larger, centre-cropped to --size so the rows stay readable.
"""

import sys

import srgan_cli

srgan_cli.quiet_console()  # before TensorFlow is imported
srgan_cli.import_tensorflow()  # without its C++ start-up lines

import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402
from absl import app, flags  # noqa: E402

from data_prep import images  # noqa: E402
from trainer import degradations, evaluation  # noqa: E402

_IMAGE = flags.DEFINE_string("image", None, "The HR image to degrade.")
_OUTPUT = flags.DEFINE_string("output", None, "PNG file to write the grid to.")
_NUM = flags.DEFINE_integer("num", 8, "Rows (degradation draws).", lower_bound=1, upper_bound=64)
_SEED = flags.DEFINE_integer("seed", 0, "Run seed.")
_SCALE = flags.DEFINE_integer("scale", 4, f"HR side / LR side, one of {degradations.SCALES}.")
_SIZE = flags.DEFINE_integer("size", 256, "Centre crop side (HR pixels), at most.", lower_bound=8)
_USM_TARGET = flags.DEFINE_bool("usm_target", True, "Show the unsharp-masked target.")

_GAP = 4  # white pixels between panels


def centre_crop(pixels, size, scale):
    """Centre crop to at most size x size, both sides multiples of scale."""
    side = size - size % scale
    height, width = pixels.shape[:2]
    top, left = max(0, (height - side) // 2), max(0, (width - side) // 2)
    return images.mod_crop(pixels[top : top + side, left : left + side], scale)


def sample_grid(pixels, num, seed, config):
    """uint8 grid: num rows of (nearest-upscaled LR | target), each draw its own step seed."""
    hr = tf.constant(pixels[None], tf.float32) / 255.0
    hr = tf.repeat(hr, num, axis=0)
    rows = []
    for i in range(num):  # one draw per row: row i equals training step i's first sample
        lr, target = degradations.degrade(hr[i : i + 1], degradations.step_seed(seed, i, 0), config)
        lr_big = tf.image.resize(lr, tf.shape(target)[1:3], method="nearest")
        rows.append(tf.concat([lr_big, tf.ones_like(target[:, :, :_GAP]), target], axis=2)[0])
    gap = tf.ones_like(rows[0][:_GAP])
    grid = tf.concat([part for row in rows for part in (row, gap)][:-1], axis=0)
    return np.round(grid.numpy() * 255.0).astype(np.uint8)


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"Unexpected arguments: {argv[1:]}")
    try:
        if not _IMAGE.value or not _OUTPUT.value:
            raise ValueError("Pass --image and --output.")
        config = degradations.DegradationConfig(scale=_SCALE.value, usm_target=_USM_TARGET.value)
        pixels = centre_crop(evaluation.read_rgb(_IMAGE.value), _SIZE.value, _SCALE.value)
        if min(pixels.shape[:2]) < _SCALE.value:
            raise ValueError(f"{_IMAGE.value} is smaller than the scale {_SCALE.value}.")
        grid = sample_grid(pixels, _NUM.value, _SEED.value, config)
        with tf.io.gfile.GFile(_OUTPUT.value, "wb") as f:
            f.write(images.encode_png(grid))
    except (ValueError, FileNotFoundError, tf.errors.NotFoundError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(f"wrote {_OUTPUT.value}: {_NUM.value} rows of (LR nearest-upscaled | HR target)")
    return 0


if __name__ == "__main__":
    app.run(main)
