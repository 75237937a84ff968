"""Shared pieces of the benchmarks: timing, interleaved rounds, synthetic models and batches.

Everything is built with random weights (perceptual weights "none"): no dataset, no network.
Throughput is measured after a warm-up call (tracing, XLA compilation) and synchronised by
reading the returned metrics back to the host.
"""

import dataclasses
import statistics
import time

import keras
import tensorflow as tf

from trainer import config, models, perceptual, steps


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


def measure(iterator, items_per_step, warmup_steps, seconds, min_steps=5):
    """Pulls warmup_steps elements untimed, then as many as fit in `seconds` (>= min_steps)."""
    for _ in range(warmup_steps):
        next(iterator)
    steps, start, cpu_start = 0, time.perf_counter(), time.process_time()
    while steps < min_steps or time.perf_counter() - start < seconds:
        next(iterator)
        steps += 1
    return Timing(
        steps * items_per_step, time.perf_counter() - start, time.process_time() - cpu_start
    )


@dataclasses.dataclass(frozen=True)
class ModelSpec:
    """The benchmarked models (the paper's sizes by default)."""

    scale: int = 4
    hr_patch_size: int = 96
    num_blocks: int = 16
    channels: int = 64
    discriminator_channels: int = 64
    content_network: str = "vgg54"


@dataclasses.dataclass(frozen=True)
class TrainingModels:
    generator: keras.Model
    discriminator: keras.Model | None
    content_model: keras.Model | None
    g_optimizer: keras.optimizers.Optimizer
    d_optimizer: keras.optimizers.Optimizer | None


def build_models(strategy, spec, phase, mixed_precision=False):
    """Models and optimizers for `phase`, built in `strategy`'s scope (random weights)."""
    previous_policy = keras.mixed_precision.global_policy()
    if mixed_precision:
        keras.mixed_precision.set_global_policy("mixed_float16")
    try:
        with strategy.scope():
            generator = models.srresnet_generator(spec.scale, spec.num_blocks, spec.channels)
            g_optimizer = steps.create_optimizer(
                1e-4, 0.9, 0.999, mixed_precision, generator.trainable_variables
            )
            if phase == config.PRETRAIN:
                return TrainingModels(generator, None, None, g_optimizer, None)
            discriminator = models.srgan_discriminator(
                spec.hr_patch_size, spec.discriminator_channels
            )
            d_optimizer = steps.create_optimizer(
                1e-4, 0.9, 0.999, mixed_precision, discriminator.trainable_variables
            )
            content_model = perceptual.build_content_model(spec.content_network, "none")
            return TrainingModels(generator, discriminator, content_model, g_optimizer, d_optimizer)
    finally:
        keras.mixed_precision.set_global_policy(previous_policy)


def synthetic_batch(global_batch_size, spec, seed=0):
    """A random (lr, hr) batch in the model value ranges."""
    lr_size = spec.hr_patch_size // spec.scale
    lr = tf.random.stateless_uniform([global_batch_size, lr_size, lr_size, 3], [seed, 1])
    hr = (
        tf.random.stateless_uniform(
            [global_batch_size, spec.hr_patch_size, spec.hr_patch_size, 3], [seed, 2]
        )
        * 2.0
        - 1.0
    )
    return lr, hr


class RepeatedBatch:
    """An iterator yielding one distributed batch forever: the input pipeline is out of the figure.

    The per-replica tensors are placed on the replicas' devices once, before timing.
    """

    def __init__(self, strategy, global_batch_size, spec):
        lr, hr = synthetic_batch(global_batch_size, spec)
        replicas = strategy.num_replicas_in_sync
        if global_batch_size % replicas:
            raise ValueError(
                f"batch size {global_batch_size} is not a multiple of the {replicas} replicas."
            )
        per_replica = global_batch_size // replicas

        def replica_slice(context):
            start = context.replica_id_in_sync_group * per_replica
            return lr[start : start + per_replica], hr[start : start + per_replica]

        self._batch = strategy.experimental_distribute_values_from_function(replica_slice)

    def __iter__(self):
        return self

    def __next__(self):
        return self._batch


def interleaved_steps_per_second(step_fns, rounds, warm_up=True):
    """Median steps/s of each of several step functions, timed in alternation.

    On a shared machine the load drifts; alternating the candidates within every round exposes
    them to the same load, and the median drops rounds disturbed by a burst.

    Args:
      step_fns: dict name -> (fn, steps): fn() runs `steps` training steps and returns when done.
      rounds: timed rounds.
      warm_up: call each fn once before timing (tracing, compilation).

    Returns:
      dict name -> median steps/s.
    """
    for fn, _ in step_fns.values() if warm_up else ():
        fn()
    seconds = {name: [] for name in step_fns}
    for _ in range(rounds):
        for name, (fn, _) in step_fns.items():
            start = time.perf_counter()
            fn()
            seconds[name].append(time.perf_counter() - start)
    return {name: step_fns[name][1] / statistics.median(times) for name, times in seconds.items()}


def loop_call(loop_fn, iterator):
    """fn() for interleaved_steps_per_second: one loop call, synchronised."""
    return lambda: _wait(loop_fn(iterator))


def _wait(metrics):
    # Reading the values back to the host waits for the steps that produced them.
    return {name: float(value) for name, value in metrics.items()}


def format_table(header, rows):
    """A fixed-width text table: header is a list of column names, rows lists of values."""
    cells = [list(map(str, header))] + [[_cell(v) for v in row] for row in rows]
    widths = [max(len(row[i]) for row in cells) for i in range(len(header))]
    lines = ["  ".join(c.rjust(w) for c, w in zip(row, widths, strict=True)) for row in cells]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


def _cell(value):
    return f"{value:.2f}" if isinstance(value, float) else str(value)


def conv_macs_per_lr_pixel(generator, probe_side=8):
    """Multiply-adds of a generator's convolutions per LR input pixel, from its layers.

    Each Conv2D costs k_h * k_w * c_in / groups * c_out per output pixel at its own
    resolution; the resolutions come from one forward pass on a probe_side^2 input (the models
    are fully convolutional, so the count scales with the pixel count). Activations, BN,
    additions, resizes and depth_to_space are left out: they are not multiply-adds of a conv and
    are memory-bound (their cost shows as the gap to the conv rate).

    Returns:
      dict conv layer name -> multiply-adds per LR pixel.
    """
    convs = [layer for layer in generator.layers if isinstance(layer, keras.layers.Conv2D)]
    probe = keras.Model(generator.inputs, [layer.output for layer in convs])
    outputs = probe(tf.zeros([1, probe_side, probe_side, 3]), training=False)
    macs = {}
    for layer, output in zip(convs, outputs, strict=True):
        k_h, k_w, c_in, c_out = layer.kernel.shape
        pixels = output.shape[1] * output.shape[2]
        macs[layer.name] = k_h * k_w * c_in * c_out * pixels / probe_side**2
    return macs
