r"""Our training loop against the seed notebook's style, both phases, same models and batch.

  python -m trainer.bench_train                      # batch 16, 96x96 HR patches, paper models
  python -m trainer.bench_train --rounds=3 --phases=gan

Ours: trainer.steps' tf.function loop (one strategy.run per step) fed by tf.data from a batch in
host memory. Seed-style: trainer.seed_style_baseline (predict + train_on_batch per step) on the
same numpy batch. The two are timed in alternation and the median per-step time reported (the
machine may be shared). Random weights (perceptual weights "none"): no dataset or network needed.
"""

import tensorflow as tf
from absl import app, flags

from trainer import benchmarking, seed_style_baseline, steps
from trainer import strategy as strategy_lib

_PHASES = flags.DEFINE_list("phases", list(steps.PHASES), "Phases to time.")
_BATCH_SIZE = flags.DEFINE_integer("batch_size", 16, "Global batch size.")
_HR_PATCH_SIZE = flags.DEFINE_integer("hr_patch_size", 96, "HR patch size.")
_ROUNDS = flags.DEFINE_integer("rounds", 5, "Timed rounds, each one seed-style step and one "
                                "call of our loop, in alternation (medians reported).")
_STEPS_PER_LOOP = flags.DEFINE_integer("steps_per_loop", 1, "Our steps per tf.function call.")
_NUM_BLOCKS = flags.DEFINE_integer("num_blocks", 16, "Generator residual blocks.")
_CHANNELS = flags.DEFINE_integer("channels", 64, "Generator channels.")
_XLA = flags.DEFINE_enum("xla", "default", steps.XLA_MODES + ("default",), "Our XLA mode.")
_STRATEGY = flags.DEFINE_enum("strategy", "auto", strategy_lib.STRATEGIES, "Our strategy.")


def _ours(strategy, spec, phase, batch):
    built = benchmarking.build_models(strategy, spec, phase)
    config = steps.StepConfig(phase=phase, global_batch_size=_BATCH_SIZE.value,
                              steps_per_loop=_STEPS_PER_LOOP.value, xla=_XLA.value)
    loop_fn = steps.build_train_loop_fn(strategy, config, built.generator, built.discriminator,
                                        built.content_model, built.g_optimizer, built.d_optimizer)
    dataset = tf.data.Dataset.from_tensors(batch).repeat().prefetch(1)
    iterator = iter(strategy.experimental_distribute_dataset(dataset))
    return benchmarking.loop_call(loop_fn, iterator), config.steps_per_loop


def _seed_style(spec, phase, batch):
    built = benchmarking.build_models(tf.distribute.get_strategy(), spec, phase)
    trainer = seed_style_baseline.SeedStyleTrainer(built.generator, built.discriminator,
                                                   built.content_model)
    lr, hr = (t.numpy() for t in batch)
    return (lambda: trainer.train_step(lr, hr)), 1


def main(argv):
    del argv
    strategy = strategy_lib.create_strategy(_STRATEGY.value)
    spec = benchmarking.ModelSpec(hr_patch_size=_HR_PATCH_SIZE.value,
                                  num_blocks=_NUM_BLOCKS.value, channels=_CHANNELS.value)
    batch = benchmarking.synthetic_batch(_BATCH_SIZE.value, spec)
    rows = []
    for phase in _PHASES.value:
        rates = benchmarking.interleaved_steps_per_second(
            {"seed-style": _seed_style(spec, phase, batch),
             "ours": _ours(strategy, spec, phase, batch)}, _ROUNDS.value)
        for name, rate in rates.items():
            rows.append([phase, name, rate, rate * _BATCH_SIZE.value, rate / rates["seed-style"]])
    print(f"batch {_BATCH_SIZE.value}, {spec.hr_patch_size}px HR patches, generator "
          f"{spec.num_blocks} blocks x {spec.channels} ch; ours: {type(strategy).__name__}, "
          f"xla={steps.resolve_xla_mode(_XLA.value, strategy)}, "
          f"steps_per_loop={_STEPS_PER_LOOP.value}")
    print(benchmarking.format_table(
        ["phase", "loop", "steps/s", "patches/s", "vs seed-style"], rows))


if __name__ == "__main__":
    app.run(main)
