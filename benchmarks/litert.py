r"""LiteRT exports of a trained generator: size, quality vs HR and vs the SavedModel, latency.

  python -m benchmarks.litert --model_dir=/tmp/rw/m2_none_nousm_targets --tile_size=128
  python -m benchmarks.litert --model_dir=MODEL_DIR --pairs_dir=DATA/Set14_x4 --num_threads=1

Exports the float32 SavedModel (serving.export_lib) and a LiteRT model per --precisions
(serving.litert) of --model_dir's generator into a temporary folder (nothing is written into
--model_dir), upscales every pair of --pairs_dir (trainer.evaluation.list_pairs) through each,
and prints per precision: the model file's size, the mean Y-PSNR against HR (trainer.metrics, the
scale shaved, as the evaluator), the mean RGB PSNR against the SavedModel's output, the share
of pixels within 1 grey level of it, and the median latency of one full window (tile_size + 2 *
overlap) over --runs interpreter calls with --num_threads. The SavedModel row is the reference
(its size is its variables). Trained weights matter here (quantisation error depends on them),
so there is no random-weights default: --model_dir is required.
"""

import os
import statistics
import tempfile
import time

import numpy as np
from absl import app, flags

from benchmarks import common
from serving import export_lib, litert, upscale_litert
from serving.upscale import SavedModelUpscaler
from trainer import evaluation, generator_store, metrics

_MODEL_DIR = flags.DEFINE_string(
    "model_dir", None, "A trainer model_dir (or checkpoint prefix) with generator.json."
)
_PAIRS_DIR = flags.DEFINE_string(
    "pairs_dir", "../shared/data/Set5_x4", "A flat folder of HR/LR pairs (the evaluator's rule)."
)
_TILE_SIZE = flags.DEFINE_integer("tile_size", 128, "Tile core side in LR pixels.")
_NUM_THREADS = flags.DEFINE_integer("num_threads", 2, "LiteRT interpreter CPU threads.")
_RUNS = flags.DEFINE_integer("runs", 10, "Timed interpreter calls of one window (median).")
_PRECISIONS = flags.DEFINE_list("precisions", list(litert.PRECISIONS), "LiteRT precisions.")


def _rgb_psnr(a, b):
    return metrics.psnr(a.astype(np.float64), b.astype(np.float64))


def _dir_bytes(path):
    return sum(
        os.path.getsize(os.path.join(root, name))
        for root, _, names in os.walk(path)
        for name in names
    )


def load_pairs(pairs_dir, scale):
    """[(key, hr uint8, lr uint8)] of the folder; a clear error when it holds none."""
    pairing = evaluation.list_pairs(pairs_dir, scale)
    if not pairing.pairs:
        raise ValueError(f"--pairs_dir {pairs_dir} holds no x{scale} HR/LR pairs.")
    return [
        (key, evaluation.read_rgb(hr), evaluation.read_rgb(lr)) for key, hr, lr in pairing.pairs
    ]


def window_latency_ms(upscaler, runs):
    """Median ms of one interpreter call on a full window (after one warm-up call)."""
    window = np.random.default_rng(0).random((upscaler.window, upscaler.window, 3))
    window = window.astype(np.float32)
    upscaler._run(window)
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        upscaler._run(window)
        times.append(time.perf_counter() - start)
    return statistics.median(times) * 1000


def row(name, megabytes, quality_values, window="-", latency_ms=None):
    """A table row as text: sizes to the kB, an identical output's infinite PSNR as such."""
    vs_hr, vs_ref, within = quality_values
    return [
        name,
        f"{megabytes:.3f}",
        f"{vs_hr:.2f}",
        "identical" if vs_ref == float("inf") else f"{vs_ref:.2f}",
        f"{within:.3f}",
        window,
        "-" if latency_ms is None else f"{latency_ms:.1f}",
    ]


def quality(outputs, references, pairs, scale):
    """(mean Y-PSNR vs HR, mean RGB PSNR vs the references, % pixels within 1 of them)."""
    vs_hr = [
        evaluation.score_image(key, hr, lr, scale, sr).psnr
        for (key, hr, lr), sr in zip(pairs, outputs, strict=True)
    ]
    if references is None:
        return statistics.mean(vs_hr), float("inf"), 100.0
    vs_ref = [_rgb_psnr(o, r) for o, r in zip(outputs, references, strict=True)]
    close = np.concatenate(
        [
            (np.abs(o.astype(int) - r.astype(int)) <= 1).ravel()
            for o, r in zip(outputs, references, strict=True)
        ]
    )
    return statistics.mean(vs_hr), statistics.mean(vs_ref), float(100.0 * close.mean())


def main(argv):
    del argv
    if not _MODEL_DIR.value:
        raise app.UsageError("--model_dir is required: a trained generator (see the module doc).")
    if not _PRECISIONS.value:
        raise app.UsageError("--precisions is empty.")
    for precision in _PRECISIONS.value:
        litert.check_precision(precision)
    config = generator_store.read_config(_MODEL_DIR.value)
    pairs = load_pairs(_PAIRS_DIR.value, config.scale)
    print(f"generator {config}; {len(pairs)} pairs from {_PAIRS_DIR.value}", flush=True)
    header = ["model", "MB", "Y-PSNR vs HR", "PSNR vs SM", "% within 1", "window", "ms/window"]
    rows = []
    with tempfile.TemporaryDirectory() as work_dir:
        saved_model, _ = export_lib.export_from_model_dir(
            _MODEL_DIR.value, work_dir, "sm", tile_size=_TILE_SIZE.value
        )
        upscaler = SavedModelUpscaler(saved_model)
        references = [upscaler.upscale_array(lr[np.newaxis])[0] for _, _, lr in pairs]
        mb = _dir_bytes(os.path.join(saved_model, "variables")) / 1e6
        rows.append(row("SavedModel float32", mb, quality(references, None, pairs, config.scale)))
        print(rows[-1], flush=True)
        for precision in _PRECISIONS.value:
            version_dir = litert.export_litert(
                _MODEL_DIR.value, work_dir, "m", precision=precision, tile_size=_TILE_SIZE.value
            )
            lite = upscale_litert.LiteRTUpscaler(version_dir, num_threads=_NUM_THREADS.value)
            outputs = [lite.upscale_image(lr) for _, _, lr in pairs]
            mb = os.path.getsize(os.path.join(version_dir, litert.MODEL_FILE)) / 1e6
            measured = quality(outputs, references, pairs, config.scale)
            latency = window_latency_ms(lite, _RUNS.value)
            rows.append(row(f"LiteRT {precision}", mb, measured, f"{lite.window}px", latency))
            print(rows[-1], flush=True)
    print(
        f"\n{_MODEL_DIR.value} ({config.architecture}, {config.num_blocks}x{config.channels} "
        f"x{config.scale}), {len(pairs)} images, tile {_TILE_SIZE.value}, "
        f"{_NUM_THREADS.value} threads, median of {_RUNS.value} calls; the machine is shared:"
    )
    print(common.format_table(header, rows))
    print(summary(rows))


def summary(rows):
    """The last line: the smallest LiteRT model's cost in quality, beside the first one's."""
    first = rows[1]
    smallest = min(rows[1:], key=lambda r: float(r[1]))
    share = float(smallest[1]) / float(first[1]) * 100
    return (
        f"summary: {smallest[0]} is {smallest[1]} MB ({share:.0f}% of {first[0]}), "
        f"{float(smallest[2]) - float(rows[0][2]):+.2f} dB Y-PSNR vs the SavedModel, "
        f"{smallest[4]}% of pixels within 1 grey level of it; {first[0]} {first[4]}% within 1, "
        f"{first[6]} ms per {first[5]} window."
    )


if __name__ == "__main__":
    app.run(main)
