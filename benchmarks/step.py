r"""Training-step throughput: phase x XLA mode x batch size, one printed table.

By default the step runs on one synthetic batch already on the device(s) (the input pipeline is
out of the figure); with --data_dir it reads a data_prep output through the real input pipeline.
The XLA modes of one phase and batch size are timed in alternation, one loop call each per
round, and the median reported (the machine may be shared). Random weights everywhere
(perceptual weights "none"): no dataset or network needed.

  python -m benchmarks.step                                  # the paper's models, GPU or CPU
  python -m benchmarks.step --batch_sizes=16 --rounds=3 --num_blocks=4   # minutes on 2 CPU cores
  python -m benchmarks.step --generator=rrdb --discriminator=unet --gan_loss=ragan   # ESRGAN

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


def _build_models(strategy, spec, phase):
    """common.build_models, with the generator and discriminator the flags name."""
    built = common.build_models(strategy, spec, phase, _MIXED_PRECISION.value)
    if _GENERATOR.value == config_lib.SRRESNET and _DISCRIMINATOR.value == "vgg":
        return built
    previous_policy = keras.mixed_precision.global_policy()
    if _MIXED_PRECISION.value:
        keras.mixed_precision.set_global_policy("mixed_float16")
    try:
        with strategy.scope():
            generator = generator_store.build_generator(_generator_config(spec))
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


def _warm_loop_call(strategy, spec, phase, xla, batch_size):
    built = _build_models(strategy, spec, phase)
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
    call = common.loop_call(loop_fn, _iterator(strategy, batch_size, spec))
    call()  # traced and compiled now: auto-clustering is a process-wide setting of this mode
    return call, config.steps_per_loop


def _rows(strategy, spec, phase, batch_size):
    candidates = {
        xla: _warm_loop_call(strategy, spec, phase, xla, batch_size) for xla in _XLA_MODES.value
    }
    rates = common.interleaved_steps_per_second(candidates, _ROUNDS.value, warm_up=False)
    return [
        [phase, xla, steps.resolve_xla_mode(xla, strategy), batch_size, rate, rate * batch_size]
        for xla, rate in rates.items()
    ]


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"Unexpected arguments: {argv[1:]}")
    strategy_lib.split_cpu(_NUM_CPU_REPLICAS.value)
    strategy = strategy_lib.create_strategy(_STRATEGY.value)
    generator = _generator_config(common.ModelSpec())
    spec = common.ModelSpec(
        hr_patch_size=_HR_PATCH_SIZE.value,
        num_blocks=generator.num_blocks,
        channels=generator.channels,
    )
    rows = [
        row
        for phase in _PHASES.value
        for batch in _BATCH_SIZES.value
        for row in _rows(strategy, spec, phase, int(batch))
    ]
    print(
        f"{type(strategy).__name__}, {strategy.num_replicas_in_sync} replica(s) on "
        f"{', '.join(strategy.extended.worker_devices)}; input: "
        f"{_DATA_DIR.value or 'synthetic, on device'}; generator {generator.architecture} "
        f"{spec.num_blocks} blocks x {spec.channels} ch; discriminator {_DISCRIMINATOR.value}, "
        f"{_GAN_LOSS.value}; {spec.hr_patch_size}px HR patches; "
        f"mixed_precision={_MIXED_PRECISION.value}"
    )
    print(common.format_table(["phase", "xla", "effective", "batch", "steps/s", "patches/s"], rows))


if __name__ == "__main__":
    app.run(main)
