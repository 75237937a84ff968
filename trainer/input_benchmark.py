"""Input throughput measurement: this pipeline, the two common baselines, and per-stage costs.

Used by trainer/bench_input.py (the entry point); nothing here reads flags.
"""

import dataclasses
import subprocess
import sys
import time

import numpy as np
import tensorflow as tf
from PIL import Image

from data_prep import schema
from trainer import input_pipeline, patches, value_range

AUTOTUNE = tf.data.AUTOTUNE


@dataclasses.dataclass(frozen=True)
class Timing:
    """A steady-state measurement: `items` produced in `seconds` of wall time, using
    `cpu_seconds` of this process's CPU time (all threads). On a shared machine the wall rate
    depends on the neighbours; CPU time per item much less so."""

    items: int
    seconds: float
    cpu_seconds: float

    @property
    def rate(self):
        return self.items / self.seconds

    @property
    def cpu_ms_per_item(self):
        return 1000.0 * self.cpu_seconds / self.items


def measure(iterator, items_per_step, warmup_steps, seconds):
    """Pulls warmup_steps elements untimed, then as many as fit in `seconds` (at least 5)."""
    for _ in range(warmup_steps):
        next(iterator)
    steps, start, cpu_start = 0, time.perf_counter(), time.process_time()
    while steps < 5 or time.perf_counter() - start < seconds:
        next(iterator)
        steps += 1
    return Timing(steps * items_per_step, time.perf_counter() - start,
                  time.process_time() - cpu_start)


def convert(hr_glob, lr_glob, output_dir, scale, hr_crop_size=None):
    """Writes a dataset with data_prep.build_tfrecords (skipped if output_dir is complete)."""
    if tf.io.gfile.exists(schema.manifest_path(output_dir)):
        return
    command = [sys.executable, "-m", "data_prep.build_tfrecords", f"--hr_glob={hr_glob}",
               f"--lr_glob={lr_glob}", f"--output_dir={output_dir}", f"--scale={scale}",
               "--val_fraction=0", "--overwrite"]  # no manifest: an earlier try was cut short
    if hr_crop_size:
        command.append(f"--hr_crop_size={hr_crop_size}")
    done = subprocess.run(command, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"{' '.join(command)} failed:\n{done.stderr[-2000:]}")


def _read_png(path):
    return tf.io.decode_png(tf.io.read_file(path), channels=3)


def file_based_dataset(lr_paths, hr_paths, hr_patch_size, scale, batch_size):
    """The common TF2 SR-repo loader: decode both PNG files per pair, one random crop each."""
    lr_patch = hr_patch_size // scale

    def load(lr_path, hr_path):
        lr, hr = _read_png(lr_path), _read_png(hr_path)
        lr_crop, hr_crop = patches.random_aligned_crops(
            lr, hr, scale, lr_patch, 1, tf.random.uniform([2], maxval=2**31 - 1, dtype=tf.int64),
            augment=False)
        return value_range.lr_from_uint8(lr_crop[0]), value_range.hr_from_uint8(hr_crop[0])

    pairs = tf.data.Dataset.from_tensor_slices((lr_paths, hr_paths)).shuffle(len(lr_paths))
    return (pairs.repeat().map(load, num_parallel_calls=AUTOTUNE)
            .batch(batch_size, drop_remainder=True).prefetch(AUTOTUNE))


def python_loader(lr_paths, hr_paths, hr_patch_size, scale, batch_size, seed=0):
    """The seed notebook's loader: per batch, PIL-load random pairs and crop with numpy."""
    rng = np.random.default_rng(seed)
    lr_patch = hr_patch_size // scale
    while True:
        lrs, hrs = [], []
        for i in rng.integers(0, len(lr_paths), batch_size):
            lr = np.asarray(Image.open(lr_paths[i]).convert("RGB"))
            hr = np.asarray(Image.open(hr_paths[i]).convert("RGB"))
            y = rng.integers(0, lr.shape[0] - lr_patch + 1)
            x = rng.integers(0, lr.shape[1] - lr_patch + 1)
            lrs.append(lr[y:y + lr_patch, x:x + lr_patch])
            hrs.append(hr[y * scale:(y + lr_patch) * scale, x * scale:(x + lr_patch) * scale])
        yield np.stack(lrs) / 255.0, np.stack(hrs) / 127.5 - 1.0


def _records(data_dir, manifest, split):
    files = schema.split_files(data_dir, manifest, split)
    return tf.data.TFRecordDataset(files, schema.compression_type(manifest.compressed),
                                   num_parallel_reads=min(len(files), 8)).repeat()


def _decode(features):
    return (tf.io.decode_png(features["lr/encoded"], channels=3),
            tf.io.decode_png(features["hr/encoded"], channels=3))


def stage_timings(data_dir, hr_patch_size, crops_per_image, seconds, split=schema.TRAIN):
    """Records/s after read, parse and decode alone, and decoded images/s through crop+augment.

    Returns:
      dict stage name -> Timing (items are records or decoded images).
    """
    manifest = input_pipeline.open_dataset(data_dir, hr_patch_size, split)
    records = _records(data_dir, manifest, split)
    parsed = records.map(schema.parse_example, num_parallel_calls=AUTOTUNE)
    decoded = parsed.map(_decode, num_parallel_calls=AUTOTUNE)
    scale, lr_patch = manifest.scale, hr_patch_size // manifest.scale
    seeds = tf.data.Dataset.random(seed=0).batch(2)

    def crop(pair, seed):
        return patches.random_aligned_crops(*pair, scale, lr_patch, crops_per_image, seed)

    # Crop cost alone: a few images decoded once, cached, then cropped over and over.
    cropped = tf.data.Dataset.zip((decoded.take(8).cache().repeat(), seeds)).map(
        crop, num_parallel_calls=AUTOTUNE)
    stages = {"read": records, "read+parse": parsed, "read+parse+decode": decoded,
              f"crop+augment x{crops_per_image}": cropped}
    return {name: measure(iter(dataset.prefetch(AUTOTUNE)), 1, 10, seconds)
            for name, dataset in stages.items()}


def pipeline_timing(data_dir, hr_patch_size, batch_size, seconds, **config_fields):
    """Steady-state pairs/s of make_train_dataset (shuffle buffer filled before timing)."""
    config = input_pipeline.TrainInputConfig(data_dir, hr_patch_size=hr_patch_size,
                                             global_batch_size=batch_size, **config_fields)
    warmup = config.shuffle_buffer // batch_size + 10
    dataset = input_pipeline.make_train_dataset(config)
    return measure(iter(dataset), batch_size, warmup, seconds)


def baseline_timings(lr_paths, hr_paths, hr_patch_size, scale, batch_size, seconds):
    """pairs/s of the seed-style Python loader and of the file-based tf.data loader."""
    python = python_loader(lr_paths, hr_paths, hr_patch_size, scale, batch_size)
    files = file_based_dataset(lr_paths, hr_paths, hr_patch_size, scale, batch_size)
    return {"seed-style PIL loader (per file, numpy crop)": measure(python, batch_size, 2, seconds),
            "file-based tf.data (decode PNG files)": measure(iter(files), batch_size, 5, seconds)}
