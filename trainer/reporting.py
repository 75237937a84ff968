"""What a training run shows: TensorBoard scalars and image grids, PNG grids, a progress line."""

import math
import posixpath
import time

import tensorflow as tf
from absl import logging

from trainer import models


def image_grid(lr, sr, hr, scale):
    """One row per example: LR (nearest-neighbour upscaled) | bicubic | SR | HR.

    Args:
      lr: uint8 [N, h, w, 3].
      sr: uint8 [N, h*s, w*s, 3] (value_range.generate_uint8 of the generator).
      hr: uint8 [N, h*s, w*s, 3].
      scale: s.

    Returns:
      uint8 [N*h*s, 4*w*s, 3].
    """
    nearest = tf.image.resize(lr, tf.shape(hr)[1:3], method="nearest")
    columns = [nearest, models.bicubic_upscale_uint8(lr, scale), sr, hr]
    rows = tf.concat(columns, axis=2)  # [N, H, 4W, 3]
    return tf.reshape(rows, [-1, tf.shape(rows)[2], 3])


def format_duration(seconds):
    if not math.isfinite(seconds):
        return "?"
    seconds = int(seconds)
    hours, rest = divmod(seconds, 3600)
    return f"{hours}h{rest // 60:02d}m" if hours else f"{rest // 60}m{rest % 60:02d}s"


class Reporter:
    """Writes summaries under `summary_dir`, PNG grids under `image_dir`, and logs progress.

    A non-chief MultiWorker worker gets directories that are deleted after the run (see
    trainer.strategy.write_dir), so only the chief's files remain.
    """

    def __init__(self, summary_dir, image_dir, total_steps):
        self.image_dir = image_dir
        self.total_steps = total_steps
        self.train_writer = tf.summary.create_file_writer(posixpath.join(summary_dir, "train"))
        self.eval_writer = tf.summary.create_file_writer(posixpath.join(summary_dir, "validation"))
        self._last_time = None
        self._last_step = None
        self.steps_per_second = float("nan")

    def start(self, step):
        """Starts the steps/s clock (also after an evaluation, so it is not counted)."""
        self._last_time, self._last_step = time.perf_counter(), step

    def train_scalars(self, step, metrics, learning_rate):
        """Writes losses, learning rate and steps/s, and logs the progress line."""
        now = time.perf_counter()
        if self._last_time is not None and step > self._last_step:
            self.steps_per_second = (step - self._last_step) / max(now - self._last_time, 1e-9)
        self._last_time, self._last_step = now, step
        with self.train_writer.as_default(step=step):
            for name, value in metrics.items():
                tf.summary.scalar(f"loss/{name}", value)
            tf.summary.scalar("learning_rate", learning_rate)
            if math.isfinite(self.steps_per_second):
                tf.summary.scalar("steps_per_second", self.steps_per_second)
        eta = (self.total_steps - step) / self.steps_per_second if self.steps_per_second else 0.0
        losses = " ".join(f"{k}={v:.4g}" for k, v in metrics.items())
        logging.info(
            "step %d/%d  %s  lr=%.3g  %.2f steps/s  ETA %s",
            step,
            self.total_steps,
            losses,
            learning_rate,
            self.steps_per_second,
            format_duration(eta),
        )

    def validation(self, step, results):
        with self.eval_writer.as_default(step=step):
            for name, value in results.items():
                tf.summary.scalar(f"validation/{name}", value)
        logging.info(
            "step %d validation: %s",
            step,
            " ".join(f"{k}={v:.4f}" for k, v in sorted(results.items())),
        )

    def images(self, step, grid):
        """Writes the LR/bicubic/SR/HR grid as an image summary and as a PNG file."""
        with self.eval_writer.as_default(step=step):
            tf.summary.image("lr_bicubic_sr_hr", grid[tf.newaxis], max_outputs=1)
        tf.io.gfile.makedirs(self.image_dir)
        path = posixpath.join(self.image_dir, f"step_{step:08d}.png")
        tf.io.write_file(path, tf.io.encode_png(grid))
        logging.info("step %d images: %s", step, path)

    def flush(self):
        self.train_writer.flush()
        self.eval_writer.flush()
