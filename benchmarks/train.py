r"""Our training loop against the seed notebook's style, both phases, same models and batch.

  python -m benchmarks.train                      # batch 16, 96x96 HR patches, paper models
  python -m benchmarks.train --rounds=3 --phases=gan

Ours: trainer.steps' tf.function loop (one strategy.run per step) fed by tf.data from a batch in
host memory. Seed-style: the SeedStyleTrainer below (predict + train_on_batch per step) on the
same numpy batch. The two are timed in alternation and the median per-step time reported (the
machine may be shared). Random weights (perceptual weights "none"): no dataset or network needed.
"""

import keras
import numpy as np
import tensorflow as tf
from absl import app, flags

from benchmarks import common
from trainer import config as config_lib
from trainer import steps
from trainer import strategy as strategy_lib


class SeedStyleTrainer:
    """Per-step Keras calls on compiled models (no tf.function loop of our own)."""

    def __init__(self, generator, discriminator=None, content_model=None, loss_weights=(1e-3, 1.0)):
        self.generator = generator
        self.discriminator = discriminator
        self.content_model = content_model
        if discriminator is None:
            generator.compile(optimizer=keras.optimizers.Adam(1e-4), loss="mse")
            return
        discriminator.compile(
            optimizer=keras.optimizers.Adam(1e-4),
            loss=keras.losses.BinaryCrossentropy(from_logits=True),
        )
        lr = keras.Input(shape=generator.input_shape[1:])
        sr = generator(lr)
        self.combined = keras.Model(lr, [discriminator(sr), content_model(sr)])
        self.combined.compile(
            optimizer=keras.optimizers.Adam(1e-4),
            loss=[keras.losses.BinaryCrossentropy(from_logits=True), "mse"],
            loss_weights=list(loss_weights),
        )

    def train_step(self, lr, hr):
        """One step on numpy batches; returns the losses as floats."""
        if self.discriminator is None:
            return {"pixel_loss": float(self.generator.train_on_batch(lr, hr))}
        batch = len(lr)
        real, fake = np.ones((batch, 1), np.float32), np.zeros((batch, 1), np.float32)
        sr = self.generator.predict(lr, verbose=0)
        self.discriminator.trainable = True
        d_real = self.discriminator.train_on_batch(hr, real)
        d_fake = self.discriminator.train_on_batch(sr, fake)
        hr_features = self.content_model.predict(hr, verbose=0)
        # The seed's pattern: the discriminator is frozen inside the combined model. Keras 3
        # reads `trainable` when a train function is first traced, so this freezes it there.
        self.discriminator.trainable = False
        g_losses = self.combined.train_on_batch(lr, [real, hr_features])
        return {"d_loss": float(d_real) + float(d_fake), "g_loss": float(np.ravel(g_losses)[0])}


_PHASES = flags.DEFINE_list("phases", list(config_lib.PHASES), "Phases to time.")
_BATCH_SIZE = flags.DEFINE_integer("batch_size", 16, "Global batch size.")
_HR_PATCH_SIZE = flags.DEFINE_integer("hr_patch_size", 96, "HR patch size.")
_ROUNDS = flags.DEFINE_integer(
    "rounds",
    5,
    "Timed rounds, each one seed-style step and one "
    "call of our loop, in alternation (medians reported).",
)
_STEPS_PER_LOOP = flags.DEFINE_integer("steps_per_loop", 1, "Our steps per tf.function call.")
_NUM_BLOCKS = flags.DEFINE_integer("num_blocks", 16, "Generator residual blocks.")
_CHANNELS = flags.DEFINE_integer("channels", 64, "Generator channels.")
_XLA = flags.DEFINE_enum(
    "xla", config_lib.XLA_DEFAULT, [config_lib.XLA_DEFAULT, *config_lib.XLA_MODES], "Our XLA mode."
)
_STRATEGY = flags.DEFINE_enum("strategy", "auto", strategy_lib.STRATEGIES, "Our strategy.")


def _ours(strategy, spec, phase, batch):
    built = common.build_models(strategy, spec, phase)
    config = config_lib.StepConfig(
        phase=phase,
        xla=steps.resolve_xla_mode(_XLA.value, strategy),
        steps_per_loop=_STEPS_PER_LOOP.value,
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
    dataset = tf.data.Dataset.from_tensors(batch).repeat().prefetch(1)
    iterator = iter(strategy.experimental_distribute_dataset(dataset))
    return common.loop_call(loop_fn, iterator), config.steps_per_loop


def _seed_style(spec, phase, batch):
    built = common.build_models(tf.distribute.get_strategy(), spec, phase)
    trainer = SeedStyleTrainer(built.generator, built.discriminator, built.content_model)
    lr, hr = (t.numpy() for t in batch)
    return (lambda: trainer.train_step(lr, hr)), 1


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"Unexpected arguments: {argv[1:]}")
    strategy = strategy_lib.create_strategy(_STRATEGY.value)
    spec = common.ModelSpec(
        hr_patch_size=_HR_PATCH_SIZE.value, num_blocks=_NUM_BLOCKS.value, channels=_CHANNELS.value
    )
    batch = common.synthetic_batch(_BATCH_SIZE.value, spec)
    rows = []
    for phase in _PHASES.value:
        rates = common.interleaved_steps_per_second(
            {
                "seed-style": _seed_style(spec, phase, batch),
                "ours": _ours(strategy, spec, phase, batch),
            },
            _ROUNDS.value,
        )
        for name, rate in rates.items():
            rows.append([phase, name, rate, rate * _BATCH_SIZE.value, rate / rates["seed-style"]])
    print(
        f"batch {_BATCH_SIZE.value}, {spec.hr_patch_size}px HR patches, generator "
        f"{spec.num_blocks} blocks x {spec.channels} ch; ours: {type(strategy).__name__}, "
        f"xla={steps.resolve_xla_mode(_XLA.value, strategy)}, "
        f"steps_per_loop={_STEPS_PER_LOOP.value}"
    )
    print(common.format_table(["phase", "loop", "steps/s", "patches/s", "vs seed-style"], rows))


if __name__ == "__main__":
    app.run(main)
