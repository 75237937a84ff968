"""Real-ESRGAN degradation throughput, as degraded HR/LR patch pairs per second.

  python -m benchmarks.degradation [--batch_size=16 --hr_patch_size=256 --rounds=3 --seconds=10]

Side by side on the same random HR batches, a few rounds alternating: `input` placement (degrade
in a tf.data map with prefetch), `device` placement (degrade in a tf.function called in a
loop), and the bicubic path (antialiased tf.image.resize downscale). Then where the time goes:
each stage alone at the size it runs at. The last line is `N pairs/s` for the faster placement.
"""

import os
import sys
import time

import srgan_cli

srgan_cli.quiet_console()  # before TensorFlow is imported
srgan_cli.import_tensorflow()  # without its C++ start-up lines

import tensorflow as tf  # noqa: E402
from absl import app, flags  # noqa: E402

from benchmarks.common import measure  # noqa: E402
from trainer import degradations as deg  # noqa: E402

_BATCH_SIZE = flags.DEFINE_integer("batch_size", 16, "Pairs per batch.", lower_bound=1)
_HR_PATCH_SIZE = flags.DEFINE_integer("hr_patch_size", 256, "HR patch side.", lower_bound=8)
_SCALE = flags.DEFINE_integer("scale", 4, "HR side / LR side.")
_ROUNDS = flags.DEFINE_integer("rounds", 3, "Alternating rounds.", lower_bound=1)
_SECONDS = flags.DEFINE_float("seconds", 10.0, "Timed seconds per measurement.", lower_bound=0.1)
_BREAKDOWN = flags.DEFINE_bool("breakdown", True, "Also time each stage alone.")

_NUM_BATCHES = 8  # distinct random HR batches, cycled


def hr_batches(batch, size):
    return tf.random.stateless_uniform([_NUM_BATCHES, batch, size, size, 3], [0, 1])


def input_dataset(hr, config):
    """degrade in a tf.data map over the HR batches (a step counter seeds it), prefetched."""
    steps = tf.data.Dataset.range(2**62)

    def degrade(step):
        batch = tf.gather(hr, step % _NUM_BATCHES)
        return deg.degrade(batch, deg.step_seed(0, step, 0), config)

    dataset = steps.map(degrade, num_parallel_calls=tf.data.AUTOTUNE)
    return dataset.prefetch(tf.data.AUTOTUNE)


def device_iterator(degrade, hr):
    """degrade (a tf.function) called in a loop, as at the start of a distributed step."""
    step = 0
    while True:
        lr, _ = degrade(hr[step % _NUM_BATCHES], deg.step_seed(0, step, 0))
        lr.numpy()
        step += 1
        yield lr


def bicubic_iterator(hr, scale):
    size = hr.shape[2] // scale
    resize = tf.function(
        lambda batch: tf.image.resize(batch, [size, size], "bicubic", antialias=True)
    )
    step = 0
    while True:
        yield resize(hr[step % _NUM_BATCHES]).numpy()
        step += 1


def stage_timings(hr, config, seconds):
    """Seconds per batch of each stage alone, at the HR size (the resized sizes are smaller on
    average: the first resize goes down with probability 0.7)."""
    batch = hr[0]
    n = batch.shape[0]
    seed = tf.constant([1, 2], tf.int64)
    kernels = deg.random_kernels(seed, n, config)
    gray = tf.range(n) % 5 < 2  # gray_noise_prob 0.4
    stages = {
        "unsharp mask (2 x 51-tap blur as GEMMs)": lambda: deg.usm_sharpen(batch),
        "kernels (3 per sample)": lambda: deg.random_kernels(seed, n, config),
        "blur 21x21, FFT (filter2d)": lambda: deg.filter2d(batch, kernels),
        "blur 21x21, depthwise conv": lambda: deg.filter2d_direct(batch, kernels),
        "gaussian noise (40% grey)": lambda: deg.gaussian_noise(
            batch, seed, tf.fill([n], 10.0), gray
        ),
        "poisson noise (40% grey)": lambda: deg.poisson_noise(batch, seed, tf.fill([n], 1.0), gray),
        "jpeg (trainer/jpeg.py)": lambda: deg._jpeg(batch, tf.fill([n], 60.0)),
    }
    result = {}
    for name, fn in stages.items():
        fn = tf.function(fn, autograph=False)
        result[name] = measure(_repeat(fn), n, 1, seconds, min_steps=3)
    return result


def _repeat(fn):
    while True:
        yield tf.nest.map_structure(lambda t: t.numpy(), fn())


def _row(name, timing):
    ms_per_batch = 1000 * timing.seconds * _BATCH_SIZE.value / timing.items
    print(
        f"  {name:<44} {timing.rate:8.1f} pairs/s  {ms_per_batch:8.1f} ms/batch  "
        f"{timing.cpu_ms_per_item:7.2f} CPU ms each",
        flush=True,
    )


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"Unexpected arguments: {argv[1:]}")
    try:
        config = deg.DegradationConfig(scale=_SCALE.value)
        if _HR_PATCH_SIZE.value % _SCALE.value:
            raise ValueError("--hr_patch_size must be a multiple of --scale.")
    except ValueError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    hr = hr_batches(_BATCH_SIZE.value, _HR_PATCH_SIZE.value)
    batch, seconds = _BATCH_SIZE.value, _SECONDS.value
    print(
        f"degraded pairs/s, HR {_HR_PATCH_SIZE.value} / LR {_HR_PATCH_SIZE.value // _SCALE.value}, "
        f"batch {batch}, {os.cpu_count()} cores:"
    )
    start = time.perf_counter()
    dataset = input_dataset(hr, config)
    degrade = tf.function(lambda batch, seed: deg.degrade(batch, seed, config), autograph=False)
    # A fresh iterator per measurement, dropped after it: a live tf.data iterator keeps filling
    # its prefetch buffer in the background, which would steal the cores from the next
    # measurement and hand the input placement batches made while it was not being timed.
    iterators = {
        "input (tf.data map + prefetch)": lambda: iter(dataset),
        "device (tf.function loop)": lambda: device_iterator(degrade, hr),
        "bicubic (antialiased resize)": lambda: bicubic_iterator(hr, _SCALE.value),
    }
    best = {name: None for name in iterators}
    for round_index in range(_ROUNDS.value):
        print(f"round {round_index + 1}:")
        for name, make_iterator in iterators.items():
            iterator = make_iterator()
            timing = measure(iterator, batch, 2, seconds, min_steps=3)
            del iterator
            _row(name, timing)
            if best[name] is None or timing.rate > best[name].rate:
                best[name] = timing
    if _BREAKDOWN.value:
        print("stages alone, on the HR batch:")
        for name, timing in stage_timings(hr, config, seconds / 2).items():
            _row(name, timing)
    print(f"({time.perf_counter() - start:.0f} s)")
    placements = {k: v for k, v in best.items() if not k.startswith("bicubic")}
    name, timing = max(placements.items(), key=lambda item: item[1].rate)
    print(f"faster placement: {name}")
    print(f"{timing.rate:.0f} pairs/s")
    return 0


if __name__ == "__main__":
    app.run(main)
