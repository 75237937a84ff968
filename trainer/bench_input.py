"""Input pipeline throughput, as steady-state LR/HR patch pairs per second.

  python -m trainer.bench_input --data_dir=DIR            # this pipeline on DIR
  python -m trainer.bench_input --compare                 # Urban100 x4: ours vs two baselines

--compare converts ../shared/data/Urban100_x4_train once (full images, and --tile_size HR tiles)
with data_prep.build_tfrecords into --work_dir, then measures side by side in one run: the
seed-style PIL loader, a file-based tf.data loader, and this pipeline on both datasets, plus
where the time goes (read / parse / decode / crop). The last line is always `N pairs/s` for
this pipeline's default settings (on the tiled shards with --compare).
"""

import glob
import os
import sys

from absl import app, flags

from trainer import input_benchmark, input_pipeline

_DEFAULT_SOURCE = os.path.join(os.path.dirname(__file__), "..", "..", "shared", "data",
                               "Urban100_x4_train")

_DATA_DIR = flags.DEFINE_string("data_dir", None, "Dataset directory (data_prep output).")
_COMPARE = flags.DEFINE_bool("compare", False, "Convert --source_dir and compare loaders.")
_SOURCE_DIR = flags.DEFINE_string("source_dir", os.path.normpath(_DEFAULT_SOURCE),
                                  "Folder of *_HR.png / *_LR.png pairs for --compare.")
_WORK_DIR = flags.DEFINE_string("work_dir", "/tmp/srgan_bench_input",
                                "Where --compare keeps its converted datasets (reused).")
_TILE_SIZE = flags.DEFINE_integer("tile_size", 480, "HR tile side for the tiled dataset.")
_HR_PATCH_SIZE = flags.DEFINE_integer("hr_patch_size", 96, "HR patch side.")
_BATCH_SIZE = flags.DEFINE_integer("batch_size", 16, "Pairs per batch.")
_SECONDS = flags.DEFINE_float("seconds", 10.0, "Timed seconds per measurement.")
_SCALE = flags.DEFINE_integer("scale", 4, "Scale of the --source_dir pairs.")


def _row(name, timing, reference=None):
    ratio = f"{timing.rate / reference:6.1f}x" if reference else "       "
    print(f"  {name:<48} {timing.rate:9.1f}/s {ratio}  {timing.cpu_ms_per_item:7.2f} CPU ms each",
          flush=True)


def _pipeline(data_dir, **config_fields):
    return input_benchmark.pipeline_timing(data_dir, _HR_PATCH_SIZE.value, _BATCH_SIZE.value,
                                           _SECONDS.value, **config_fields)


def _compare():
    hr_paths = sorted(glob.glob(os.path.join(_SOURCE_DIR.value, "*_HR.png")))
    lr_paths = sorted(glob.glob(os.path.join(_SOURCE_DIR.value, "*_LR.png")))
    if not hr_paths or len(hr_paths) != len(lr_paths):
        raise ValueError(f"{_SOURCE_DIR.value}: expected matching *_HR.png / *_LR.png files.")
    full_dir = os.path.join(_WORK_DIR.value, "full")
    tiled_dir = os.path.join(_WORK_DIR.value, f"tiles{_TILE_SIZE.value}")
    for out_dir, tile in ((full_dir, None), (tiled_dir, _TILE_SIZE.value)):
        input_benchmark.convert(os.path.join(_SOURCE_DIR.value, "*_HR.png"),
                                os.path.join(_SOURCE_DIR.value, "*_LR.png"), out_dir,
                                _SCALE.value, tile)
    print(f"pairs/s, HR {_HR_PATCH_SIZE.value} / LR {_HR_PATCH_SIZE.value // _SCALE.value}, "
          f"batch {_BATCH_SIZE.value}, {len(hr_paths)} pairs, {os.cpu_count()} cores:")
    baselines = input_benchmark.baseline_timings(lr_paths, hr_paths, _HR_PATCH_SIZE.value,
                                                 _SCALE.value, _BATCH_SIZE.value, _SECONDS.value)
    reference = next(iter(baselines.values())).rate
    for name, timing in baselines.items():
        _row(name, timing, reference)
    _row("this pipeline, full-image shards", _pipeline(full_dir), reference)
    tiled = _pipeline(tiled_dir)
    _row(f"this pipeline, {_TILE_SIZE.value}-px tile shards", tiled, reference)
    _row("this pipeline, full images, cache_decoded_images",
         _pipeline(full_dir, cache_decoded_images=True), reference)
    config = input_pipeline.TrainInputConfig(tiled_dir)
    for name, data_dir in (("full images", full_dir), ("tiles", tiled_dir)):
        print(f"stages ({name}; records or images per second):")
        for stage, timing in input_benchmark.stage_timings(
                data_dir, _HR_PATCH_SIZE.value, config.crops_per_image,
                _SECONDS.value / 2).items():
            _row(stage, timing)
    return tiled


def main(argv):
    del argv
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
