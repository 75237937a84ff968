"""Input pipeline throughput, as steady-state LR/HR patch pairs per second.

  python -m benchmarks.input_pipeline --data_dir=DIR            # this pipeline on DIR
  python -m benchmarks.input_pipeline --compare                 # Urban100 x4: ours vs two baselines

--compare converts ../shared/data/Urban100_x4_train once (full images, and --tile_size HR tiles)
with data_prep.build_tfrecords into --work_dir, then measures side by side in one run: the
seed-style PIL loader, a file-based tf.data loader, and this pipeline on both datasets, plus
where the time goes (read / parse / decode / crop). The last line is always `N pairs/s` for
this pipeline's default settings (on the tiled shards with --compare).
"""

import glob
import os
import subprocess
import sys

import numpy as np
import tensorflow as tf
from absl import app, flags
from PIL import Image

from benchmarks.common import measure
from data_prep import schema
from trainer import config as config_lib
from trainer import input_pipeline, patches, value_range

AUTOTUNE = tf.data.AUTOTUNE


def convert(hr_glob, lr_glob, output_dir, scale, hr_crop_size=None):
    """Writes a dataset with data_prep.build_tfrecords (skipped if output_dir is complete)."""
    if tf.io.gfile.exists(schema.manifest_path(output_dir)):
        return
    command = [
        sys.executable,
        "-m",
        "data_prep.build_tfrecords",
        f"--hr_glob={hr_glob}",
        f"--lr_glob={lr_glob}",
        f"--output_dir={output_dir}",
        f"--scale={scale}",
        "--val_fraction=0",
        "--overwrite",
    ]  # no manifest: an earlier try was cut short
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
            lr,
            hr,
            scale,
            lr_patch,
            1,
            tf.random.uniform([2], maxval=2**31 - 1, dtype=tf.int64),
            augment=False,
        )
        return value_range.lr_from_uint8(lr_crop[0]), value_range.hr_from_uint8(hr_crop[0])

    pairs = tf.data.Dataset.from_tensor_slices((lr_paths, hr_paths)).shuffle(len(lr_paths))
    return (
        pairs.repeat()
        .map(load, num_parallel_calls=AUTOTUNE)
        .batch(batch_size, drop_remainder=True)
        .prefetch(AUTOTUNE)
    )


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
            lrs.append(lr[y : y + lr_patch, x : x + lr_patch])
            hrs.append(hr[y * scale : (y + lr_patch) * scale, x * scale : (x + lr_patch) * scale])
        yield np.stack(lrs) / 255.0, np.stack(hrs) / 127.5 - 1.0


def _records(source, split):
    files, _ = source.files(split)
    return tf.data.TFRecordDataset(
        files,
        schema.compression_type(source.manifest.compressed),
        num_parallel_reads=min(len(files), 8),
    ).repeat()


def _decode(features):
    return (
        tf.io.decode_png(features["lr/encoded"], channels=3),
        tf.io.decode_png(features["hr/encoded"], channels=3),
    )


def stage_timings(data_dir, hr_patch_size, crops_per_image, seconds, split=schema.TRAIN):
    """Records/s after read, parse and decode alone, and decoded images/s through crop+augment.

    Returns:
      dict stage name -> Timing (items are records or decoded images).
    """
    source = input_pipeline.open_dataset(data_dir)
    input_pipeline.check_split(source, split, hr_patch_size)
    records = _records(source, split)
    parsed = records.map(schema.parse_example, num_parallel_calls=AUTOTUNE)
    decoded = parsed.map(_decode, num_parallel_calls=AUTOTUNE)
    scale, lr_patch = source.scale, hr_patch_size // source.scale
    seeds = tf.data.Dataset.random(seed=0).batch(2)

    def crop(pair, seed):
        return patches.random_aligned_crops(*pair, scale, lr_patch, crops_per_image, seed)

    # Crop cost alone: a few images decoded once, cached, then cropped over and over.
    cropped = tf.data.Dataset.zip((decoded.take(8).cache().repeat(), seeds)).map(
        crop, num_parallel_calls=AUTOTUNE
    )
    stages = {
        "read": records,
        "read+parse": parsed,
        "read+parse+decode": decoded,
        f"crop+augment x{crops_per_image}": cropped,
    }
    return {
        name: measure(iter(dataset.prefetch(AUTOTUNE)), 1, 10, seconds)
        for name, dataset in stages.items()
    }


def pipeline_timing(data_dir, hr_patch_size, batch_size, seconds, **config_fields):
    """Steady-state pairs/s of make_train_dataset (shuffle buffer filled before timing)."""
    config = config_lib.InputConfig(
        hr_patch_size=hr_patch_size, global_batch_size=batch_size, **config_fields
    )
    warmup = config.shuffle_buffer // batch_size + 10
    dataset = input_pipeline.make_train_dataset(input_pipeline.open_dataset(data_dir), config)
    return measure(iter(dataset), batch_size, warmup, seconds)


def baseline_timings(lr_paths, hr_paths, hr_patch_size, scale, batch_size, seconds):
    """pairs/s of the seed-style Python loader and of the file-based tf.data loader."""
    python = python_loader(lr_paths, hr_paths, hr_patch_size, scale, batch_size)
    files = file_based_dataset(lr_paths, hr_paths, hr_patch_size, scale, batch_size)
    return {
        "seed-style PIL loader (per file, numpy crop)": measure(python, batch_size, 2, seconds),
        "file-based tf.data (decode PNG files)": measure(iter(files), batch_size, 5, seconds),
    }


_DEFAULT_SOURCE = os.path.join(
    os.path.dirname(__file__), "..", "..", "shared", "data", "Urban100_x4_train"
)

_DATA_DIR = flags.DEFINE_string("data_dir", None, "Dataset directory (data_prep output).")
_COMPARE = flags.DEFINE_bool("compare", False, "Convert --source_dir and compare loaders.")
_SOURCE_DIR = flags.DEFINE_string(
    "source_dir",
    os.path.normpath(_DEFAULT_SOURCE),
    "Folder of *_HR.png / *_LR.png pairs for --compare.",
)
_WORK_DIR = flags.DEFINE_string(
    "work_dir", "/tmp/srgan_bench_input", "Where --compare keeps its converted datasets (reused)."
)
_TILE_SIZE = flags.DEFINE_integer("tile_size", 480, "HR tile side for the tiled dataset.")
_HR_PATCH_SIZE = flags.DEFINE_integer("hr_patch_size", 96, "HR patch side.")
_BATCH_SIZE = flags.DEFINE_integer("batch_size", 16, "Pairs per batch.")
_SECONDS = flags.DEFINE_float("seconds", 10.0, "Timed seconds per measurement.")
_SCALE = flags.DEFINE_integer("scale", 4, "Scale of the --source_dir pairs.")


def _row(name, timing, reference=None):
    ratio = f"{timing.rate / reference:6.1f}x" if reference else "       "
    print(
        f"  {name:<48} {timing.rate:9.1f}/s {ratio}  {timing.cpu_ms_per_item:7.2f} CPU ms each",
        flush=True,
    )


def _pipeline(data_dir, **config_fields):
    return pipeline_timing(
        data_dir, _HR_PATCH_SIZE.value, _BATCH_SIZE.value, _SECONDS.value, **config_fields
    )


def _compare():
    hr_paths = sorted(glob.glob(os.path.join(_SOURCE_DIR.value, "*_HR.png")))
    lr_paths = sorted(glob.glob(os.path.join(_SOURCE_DIR.value, "*_LR.png")))
    if not hr_paths or len(hr_paths) != len(lr_paths):
        raise ValueError(f"{_SOURCE_DIR.value}: expected matching *_HR.png / *_LR.png files.")
    full_dir = os.path.join(_WORK_DIR.value, "full")
    tiled_dir = os.path.join(_WORK_DIR.value, f"tiles{_TILE_SIZE.value}")
    for out_dir, tile in ((full_dir, None), (tiled_dir, _TILE_SIZE.value)):
        convert(
            os.path.join(_SOURCE_DIR.value, "*_HR.png"),
            os.path.join(_SOURCE_DIR.value, "*_LR.png"),
            out_dir,
            _SCALE.value,
            tile,
        )
    print(
        f"pairs/s, HR {_HR_PATCH_SIZE.value} / LR {_HR_PATCH_SIZE.value // _SCALE.value}, "
        f"batch {_BATCH_SIZE.value}, {len(hr_paths)} pairs, {os.cpu_count()} cores:"
    )
    baselines = baseline_timings(
        lr_paths, hr_paths, _HR_PATCH_SIZE.value, _SCALE.value, _BATCH_SIZE.value, _SECONDS.value
    )
    reference = next(iter(baselines.values())).rate
    for name, timing in baselines.items():
        _row(name, timing, reference)
    _row("this pipeline, full-image shards", _pipeline(full_dir), reference)
    tiled = _pipeline(tiled_dir)
    _row(f"this pipeline, {_TILE_SIZE.value}-px tile shards", tiled, reference)
    _row(
        "this pipeline, full images, cache_decoded_images",
        _pipeline(full_dir, cache_decoded_images=True),
        reference,
    )
    config = config_lib.InputConfig()
    for name, data_dir in (("full images", full_dir), ("tiles", tiled_dir)):
        print(f"stages ({name}; records or images per second):")
        for stage, timing in stage_timings(
            data_dir, _HR_PATCH_SIZE.value, config.crops_per_image, _SECONDS.value / 2
        ).items():
            _row(stage, timing)
    return tiled


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"Unexpected arguments: {argv[1:]}")
    try:
        if _COMPARE.value:
            timing = _compare()
        elif _DATA_DIR.value:
            timing = _pipeline(_DATA_DIR.value)
        else:
            raise ValueError("Pass --data_dir=DIR, or --compare.")
    except (ValueError, FileNotFoundError, RuntimeError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(f"{timing.rate:.0f} pairs/s")
    return 0


if __name__ == "__main__":
    app.run(main)
