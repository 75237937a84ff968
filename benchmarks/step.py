r"""Training-step throughput: phase x XLA mode x batch size, one printed table.

By default the step runs on one synthetic batch already on the device(s) (the input pipeline is
out of the figure); with --data_dir it reads a data_prep output through the real input pipeline.
The XLA modes of one phase and batch size are timed in alternation, one loop call each per
round, and the median reported (the machine may be shared). Random weights everywhere
(perceptual weights "none"): no dataset or network needed.

  python -m benchmarks.step                                  # the paper's models, GPU or CPU
  python -m benchmarks.step --batch_sizes=16 --rounds=3 --num_blocks=4   # minutes on 2 CPU cores
  python -m benchmarks.step --generator=rrdb --discriminator=unet --gan_loss=ragan   # ESRGAN
  python -m benchmarks.step --generators=srresnet,compact,rrdb:128 --xla_modes=off \
      --batch_sizes=16 --rounds=3          # the three generators side by side, reference sizes

With --generators, every generator (its reference size; NAME:PX gives it its own HR patch side)
joins the alternation of each phase and batch size, so they see the same load.

On CPU, XLA auto-clustering (--xla_modes=auto) only clusters when the process starts with
TF_XLA_FLAGS=--tf_xla_cpu_global_jit.
"""

import dataclasses

import keras
from absl import app, flags

from benchmarks import common
from trainer import config as config_lib
from trainer import generator_store, steps, train_state
from trainer import strategy as strategy_lib

_PHASES = flags.DEFINE_list("phases", list(config_lib.PHASES), "Phases to time.")
_XLA_MODES = flags.DEFINE_list("xla_modes", list(config_lib.XLA_MODES), "XLA modes to time.")
_BATCH_SIZES = flags.DEFINE_list("batch_sizes", ["16", "64"], "Global batch sizes.")
_ROUNDS = flags.DEFINE_integer(
    "rounds",
    10,
    "Timed rounds; each times one loop call of every XLA mode in alternation (medians reported).",
)
_STEPS_PER_LOOP = flags.DEFINE_integer("steps_per_loop", 1, "Steps per tf.function call.")
_GENERATOR = flags.DEFINE_enum(
    "generator", config_lib.SRRESNET, list(config_lib.GENERATORS), "Generator architecture."
)
_NUM_BLOCKS = flags.DEFINE_integer(
    "num_blocks", None, "Generator blocks (default: the architecture's reference size)."
)
_CHANNELS = flags.DEFINE_integer("channels", None, "Generator channels (default: reference).")
_GROWTH = flags.DEFINE_integer("growth", None, "rrdb growth channels (default 32).")
_DISCRIMINATOR = flags.DEFINE_enum(
    "discriminator", "vgg", list(config_lib.DISCRIMINATORS), "Discriminator architecture."
)
_GAN_LOSS = flags.DEFINE_enum("gan_loss", "bce", list(config_lib.GAN_LOSSES), "GAN loss.")
_HR_PATCH_SIZE = flags.DEFINE_integer("hr_patch_size", 96, "HR patch size.")
_MIXED_PRECISION = flags.DEFINE_bool("mixed_precision", False, "mixed_float16 + loss scaling.")
_STRATEGY = flags.DEFINE_enum("strategy", "auto", strategy_lib.STRATEGIES, "Strategy.")
_NUM_CPU_REPLICAS = flags.DEFINE_integer("num_cpu_replicas", 1, "Logical CPU devices (no GPU).")
_DATA_DIR = flags.DEFINE_string("data_dir", None, "data_prep output: time the input too.")
_GENERATORS = flags.DEFINE_list(
    "generators",
    None,
    "Time these generators side by side (reference sizes; NAME or NAME:HR_PATCH_SIZE), "
    "instead of --generator with --num_blocks/--channels/--growth/--hr_patch_size.",
)


@dataclasses.dataclass(frozen=True)
class Candidate:
    """One timed generator: its name in the table, builder config and model sizes."""

    label: str
    generator: config_lib.GeneratorConfig
    spec: common.ModelSpec


def _iterator(strategy, batch_size, spec):
    if _DATA_DIR.value is None:
        return common.RepeatedBatch(strategy, batch_size, spec)
    from trainer import input_pipeline  # noqa: PLC0415 (only with --data_dir)

    source = input_pipeline.open_dataset(_DATA_DIR.value)
    config = config_lib.InputConfig(hr_patch_size=spec.hr_patch_size, global_batch_size=batch_size)
    return iter(
        strategy.distribute_datasets_from_function(input_pipeline.train_dataset_fn(source, config))
    )


def _generator_config(spec):
    return config_lib.GeneratorConfig(
        scale=spec.scale,
        num_blocks=_NUM_BLOCKS.value,
        channels=_CHANNELS.value,
        architecture=_GENERATOR.value,
        growth=_GROWTH.value,
    )


def _spec(generator, hr_patch_size):
    return common.ModelSpec(
        hr_patch_size=hr_patch_size, num_blocks=generator.num_blocks, channels=generator.channels
    )


def parse_candidates(names, default_patch_size, scale=4):
    """Candidates of --generators: "NAME" or "NAME:HR_PATCH_SIZE", at reference sizes."""
    candidates = []
    for entry in names:
        name, _, size = entry.partition(":")
        if name not in config_lib.GENERATORS:
            raise app.UsageError(f"--generators: unknown generator {name!r} in {entry!r}.")
        if size and not (size.isdigit() and int(size) % scale == 0 and int(size) > 0):
            raise app.UsageError(
                f"--generators: {entry!r} needs a positive HR patch size divisible by {scale}."
            )
        generator = config_lib.GeneratorConfig(scale=scale, architecture=name)
        spec = _spec(generator, int(size) if size else default_patch_size)
        candidates.append(Candidate(entry, generator, spec))
    if len({c.label for c in candidates}) != len(candidates):
        raise app.UsageError(f"--generators lists a generator twice: {names}.")
    return candidates


def _flag_candidate():
    generator = _generator_config(common.ModelSpec())
    return Candidate(generator.architecture, generator, _spec(generator, _HR_PATCH_SIZE.value))


def _build_models(strategy, candidate, phase):
    """common.build_models, with the candidate's generator and the flags' discriminator."""
    spec = candidate.spec
    built = common.build_models(strategy, spec, phase, _MIXED_PRECISION.value)
    if candidate.generator.architecture == config_lib.SRRESNET and _DISCRIMINATOR.value == "vgg":
        return built
    previous_policy = keras.mixed_precision.global_policy()
    if _MIXED_PRECISION.value:
        keras.mixed_precision.set_global_policy("mixed_float16")
    try:
        with strategy.scope():
            generator = generator_store.build_generator(candidate.generator)
            discriminator = None
            if phase == config_lib.GAN:
                discriminator = train_state.build_discriminator(
                    config_lib.DiscriminatorConfig(_DISCRIMINATOR.value), spec.hr_patch_size
                )

            def optimizer(model):
                return steps.create_optimizer(
                    1e-4, 0.9, 0.999, _MIXED_PRECISION.value, model.trainable_variables
                )

            return dataclasses.replace(
                built,
                generator=generator,
                g_optimizer=optimizer(generator),
                discriminator=discriminator,
                d_optimizer=None if discriminator is None else optimizer(discriminator),
            )
    finally:
        keras.mixed_precision.set_global_policy(previous_policy)


def _warm_loop_call(strategy, candidate, phase, xla, batch_size):
    built = _build_models(strategy, candidate, phase)
    config = config_lib.StepConfig(
        phase=phase,
        xla=steps.resolve_xla_mode(xla, strategy),
        steps_per_loop=_STEPS_PER_LOOP.value,
        loss=config_lib.LossConfig(perceptual_weights="none", gan_loss=_GAN_LOSS.value),
    )
    loop_fn = steps.build_train_loop_fn(
        strategy,
        config,
        built.generator,
        built.discriminator,
        built.content_model,
        built.g_optimizer,
        built.d_optimizer,
    )
    call = common.loop_call(loop_fn, _iterator(strategy, batch_size, candidate.spec))
    call()  # traced and compiled now: auto-clustering is a process-wide setting of this mode
    return call, config.steps_per_loop


def _rows(strategy, candidates, phase, batch_size):
    """One row per (candidate, XLA mode), all timed in one alternation."""
    calls = {
        (candidate, xla): _warm_loop_call(strategy, candidate, phase, xla, batch_size)
        for candidate in candidates
        for xla in _XLA_MODES.value
    }
    rates = common.interleaved_steps_per_second(calls, _ROUNDS.value, warm_up=False)
    return [
        [candidate, phase, xla, steps.resolve_xla_mode(xla, strategy), batch_size, rate]
        for (candidate, xla), rate in rates.items()
    ]


def _print_single(strategy, candidate, rows):
    spec = candidate.spec
    print(
        f"{type(strategy).__name__}, {strategy.num_replicas_in_sync} replica(s) on "
        f"{', '.join(strategy.extended.worker_devices)}; input: "
        f"{_DATA_DIR.value or 'synthetic, on device'}; generator "
        f"{candidate.generator.architecture} "
        f"{spec.num_blocks} blocks x {spec.channels} ch; discriminator {_DISCRIMINATOR.value}, "
        f"{_GAN_LOSS.value}; {spec.hr_patch_size}px HR patches; "
        f"mixed_precision={_MIXED_PRECISION.value}"
    )
    table = [
        [phase, xla, eff, batch, rate, rate * batch] for _, phase, xla, eff, batch, rate in rows
    ]
    print(
        common.format_table(["phase", "xla", "effective", "batch", "steps/s", "patches/s"], table)
    )


def _print_side_by_side(strategy, rows):
    print(
        f"{type(strategy).__name__}, {strategy.num_replicas_in_sync} replica(s) on "
        f"{', '.join(strategy.extended.worker_devices)}; input: "
        f"{_DATA_DIR.value or 'synthetic, on device'}; reference-size generators, timed in "
        f"alternation; discriminator {_DISCRIMINATOR.value}, {_GAN_LOSS.value}; "
        f"mixed_precision={_MIXED_PRECISION.value}"
    )
    table = [
        [
            c.label,
            f"{c.generator.num_blocks}x{c.generator.channels}",
            phase,
            xla,
            eff,
            batch,
            c.spec.hr_patch_size,
            rate,
            rate * batch,
        ]
        for c, phase, xla, eff, batch, rate in rows
    ]
    header = ["generator", "size", "phase", "xla", "effective", "batch", "HR px", "steps/s"]
    print(common.format_table([*header, "patches/s"], table))


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"Unexpected arguments: {argv[1:]}")
    strategy_lib.split_cpu(_NUM_CPU_REPLICAS.value)
    strategy = strategy_lib.create_strategy(_STRATEGY.value)
    if _GENERATORS.value:
        candidates = parse_candidates(_GENERATORS.value, _HR_PATCH_SIZE.value)
    else:
        candidates = [_flag_candidate()]
    rows = [
        row
        for phase in _PHASES.value
        for batch in _BATCH_SIZES.value
        for row in _rows(strategy, candidates, phase, int(batch))
    ]
    if _GENERATORS.value:
        _print_side_by_side(strategy, rows)
    else:
        _print_single(strategy, candidates[0], rows)


if __name__ == "__main__":
    app.run(main)
