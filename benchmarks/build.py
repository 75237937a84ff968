"""Write-throughput benchmark: the Beam job against plain single-process loops, side by side.

  python -m benchmarks.build --data_dir=../shared/data/Urban100_x4_train

Prints seconds, pairs/s and input MB/s (HR + LR source bytes) for:
  floor      decode + validate every pair, write nothing (the per-pair cost to approach)
  baseline   the loop a user would write: PIL open, convert RGB, re-encode PNG, TFRecordWriter
  loop+pt    the same loop with this job's rules (PNG pass-through, one decode per image)
  beam       this job on DirectRunner, multi_processing with --workers workers (and, for
             comparison, multi_threading)
  beam-1     the same job on one pair: its fixed start-up cost
and, with --hr_crop_size, the loop and the job cutting aligned sub-image tiles. CPU seconds
include Beam's worker processes; on a shared machine they are steadier than wall time.
"""

import glob
import io
import os
import resource
import shutil
import tempfile
import time

import srgan_cli
from data_prep import beam_options  # imports Beam on first use, not here

srgan_cli.quiet_console()  # before Beam and TensorFlow are imported
beam_options.hide_import_notices()

import tensorflow as tf  # noqa: E402
from absl import app, flags  # noqa: E402
from PIL import Image  # noqa: E402

from data_prep import images, pairing, pipeline, schema  # noqa: E402

_DATA_DIR = flags.DEFINE_string(
    "data_dir", "../shared/data/Urban100_x4_train", "Folder of *_HR / *_LR image pairs (x4)."
)
_WORK_DIR = flags.DEFINE_string("work_dir", None, "Scratch folder (default: a temp dir).")
_WORKERS = flags.DEFINE_integer("workers", 2, "DirectRunner workers for the Beam job.")
_HR_CROP_SIZE = flags.DEFINE_integer(
    "hr_crop_size", 480, "Tile size for the tiled runs; 0 skips them."
)
_ONLY = flags.DEFINE_list(
    "only",
    None,
    "Run only rows whose name contains one of these "
    "words (the baseline row is needed for the speed-up column).",
)
_SCALE = 4


def _pairs(data_dir):
    paths = sorted(p for p in glob.glob(os.path.join(data_dir, "*")) if images.is_image_name(p))
    hrs = [p for p in paths if os.path.splitext(p)[0].endswith("_HR")]
    lrs = [p for p in paths if os.path.splitext(p)[0].endswith("_LR")]
    matched = pairing.pair_paths(hrs, lrs, _SCALE)
    return [(key, hr, lr) for key, hr, lr in matched.pairs]


def _read(path):
    with open(path, "rb") as f:
        return f.read()


def _naive_png(path):
    buffer = io.BytesIO()
    Image.open(path).convert("RGB").save(buffer, format="PNG")
    return buffer.getvalue()


def _naive_record(key, hr_path, lr_path):
    hr_png, lr_png = _naive_png(hr_path), _naive_png(lr_path)
    hr_size, lr_size = Image.open(io.BytesIO(hr_png)).size, Image.open(io.BytesIO(lr_png)).size
    return [
        schema.PairRecord(
            key=key,
            scale=_SCALE,
            lr_png=lr_png,
            lr_height=lr_size[1],
            lr_width=lr_size[0],
            hr_png=hr_png,
            hr_height=hr_size[1],
            hr_width=hr_size[0],
        )
    ]


def _job_records(config):
    def records(key, hr_path, lr_path):
        hr = images.decode_rgb(_read(hr_path))
        lr = images.decode_rgb(_read(lr_path))
        return images.prepare_pair(key, hr, lr, config)

    return records


def _loop(pairs, out_dir, make_records, write=True):
    """Single process: records for each pair, written to one TFRecord file."""
    writer = tf.io.TFRecordWriter(os.path.join(out_dir, "loop.tfrecord")) if write else None
    for key, hr_path, lr_path in pairs:
        for record in make_records(key, hr_path, lr_path):
            if writer:
                writer.write(schema.to_example(record).SerializeToString())
    if writer:
        writer.close()


def _beam(pairs, out_dir, workers, hr_crop_size=None, mode="multi_processing"):
    src = os.path.join(out_dir, "src")
    os.makedirs(src)
    for _, hr_path, lr_path in pairs:  # symlinks: the job reads exactly these pairs.
        for path in (hr_path, lr_path):
            os.symlink(os.path.abspath(path), os.path.join(src, os.path.basename(path)))
    config = pipeline.JobConfig(
        hr_glob=os.path.join(src, "*_HR.*"),
        lr_glob=os.path.join(src, "*_LR.*"),
        output_dir=os.path.join(out_dir, "data"),
        val_fraction=0.0,
        pair=images.PairConfig(scale=_SCALE, hr_crop_size=hr_crop_size),
    )
    options = beam_options.pipeline_options(
        [f"--direct_num_workers={workers}", f"--direct_running_mode={mode}"],
        quiet=not srgan_cli.verbose(),
    )
    pipeline.run(config, options)


def _cpu_seconds():
    """User + system CPU of this process and its finished children (Beam's SDK workers)."""
    own, children = (
        resource.getrusage(who) for who in (resource.RUSAGE_SELF, resource.RUSAGE_CHILDREN)
    )
    return own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime


def _timed(name, pairs, run, baseline_seconds=None):
    if _ONLY.value and not any(word in name for word in _ONLY.value):
        return None
    megabytes = sum(os.path.getsize(p) for _, hr, lr in pairs for p in (hr, lr)) / 2**20
    start, start_cpu = time.perf_counter(), _cpu_seconds()
    run()
    seconds, cpu = time.perf_counter() - start, _cpu_seconds() - start_cpu
    speedup = f"{baseline_seconds / seconds:5.2f}x" if baseline_seconds else "   - "
    print(
        f"{name:<36} {seconds:6.2f} s {len(pairs) / seconds:6.2f} pairs/s "
        f"{megabytes / seconds:6.2f} MB/s {speedup} vs baseline  (CPU {cpu:6.2f} s)",
        flush=True,
    )
    return seconds


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"positional arguments are not accepted: {' '.join(argv[1:])}")
    pairs = _pairs(_DATA_DIR.value)
    if not pairs:
        raise app.UsageError(f"no *_HR/*_LR image pairs in {_DATA_DIR.value}")
    work = _WORK_DIR.value or tempfile.mkdtemp(prefix="bench_build_")
    config = images.PairConfig(scale=_SCALE)
    print(f"{len(pairs)} pairs from {_DATA_DIR.value}; {os.cpu_count()} CPUs (shared: noisy)")

    def fresh(name):
        path = os.path.join(work, name)
        shutil.rmtree(path, ignore_errors=True)
        os.makedirs(path)
        return path

    _timed(
        "floor: decode+validate, no write",
        pairs,
        lambda: _loop(pairs, fresh("floor"), _job_records(config), write=False),
    )
    base = _timed(
        "baseline: PIL re-encode loop",
        pairs,
        lambda: _loop(pairs, fresh("baseline"), _naive_record),
    )
    _timed(
        "loop + pass-through (1 process)",
        pairs,
        lambda: _loop(pairs, fresh("loop"), _job_records(config)),
        base,
    )
    _timed(
        f"beam x{_WORKERS.value} multi_processing",
        pairs,
        lambda: _beam(pairs, fresh("beam"), _WORKERS.value),
        base,
    )
    _timed(
        f"beam x{_WORKERS.value} multi_threading",
        pairs,
        lambda: _beam(pairs, fresh("beam_threads"), _WORKERS.value, mode="multi_threading"),
        base,
    )
    _timed(
        f"beam x{_WORKERS.value} on 1 pair (start-up)",
        pairs[:1],
        lambda: _beam(pairs[:1], fresh("beam1"), _WORKERS.value),
    )
    if _HR_CROP_SIZE.value:
        crop = _HR_CROP_SIZE.value
        tiled = images.PairConfig(scale=_SCALE, hr_crop_size=crop)
        _timed(
            f"loop, {crop}px tiles (1 process)",
            pairs,
            lambda: _loop(pairs, fresh("loop_tiles"), _job_records(tiled)),
            base,
        )
        _timed(
            f"beam x{_WORKERS.value}, {crop}px tiles",
            pairs,
            lambda: _beam(pairs, fresh("beam_tiles"), _WORKERS.value, crop),
            base,
        )
    if not _WORK_DIR.value:
        shutil.rmtree(work)


def run():
    app.run(main)


if __name__ == "__main__":
    run()
