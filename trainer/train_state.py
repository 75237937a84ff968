"""Everything a training run checkpoints: models, optimizers and the step counter.

Built inside the strategy scope, so variables are mirrored and the Keras 3 optimizers are built
on the models' variables before the first distributed step (keras-team/keras#19246).
"""

import dataclasses

import keras
import tensorflow as tf
from absl import logging

from trainer import generator_store, models, perceptual, steps

STEP_VARIABLE_NAME = "global_step"


@dataclasses.dataclass
class TrainState:
    """The trainable objects of one phase (discriminator, content model, d_optimizer: GAN only)."""

    generator: keras.Model
    g_optimizer: keras.optimizers.Optimizer
    global_step: tf.Variable
    discriminator: keras.Model | None = None
    d_optimizer: keras.optimizers.Optimizer | None = None
    content_model: keras.Model | None = None

    def step(self):
        return int(self.global_step.numpy())

    def learning_rate(self):
        """The generator optimizer's current learning rate (follows its schedule)."""
        return float(keras.ops.convert_to_numpy(self.g_optimizer.learning_rate))


def learning_rate_schedule(values, boundaries):
    """A piecewise-constant schedule over the optimizer's step (a float when constant).

    Args:
      values: learning rates, one more than `boundaries`.
      boundaries: increasing step numbers at which the next value starts.
    """
    values, boundaries = [float(v) for v in values], [int(b) for b in boundaries]
    if len(values) != len(boundaries) + 1:
        raise ValueError(
            f"{len(values)} learning rates need {len(values) - 1} boundaries, got "
            f"{len(boundaries)} ({boundaries})."
        )
    if any(b2 <= b1 for b1, b2 in zip(boundaries, boundaries[1:], strict=False)) or (
        boundaries and boundaries[0] <= 0
    ):
        raise ValueError(f"Learning-rate boundaries must be positive and increasing: {boundaries}.")
    if not boundaries:
        return values[0]
    return keras.optimizers.schedules.PiecewiseConstantDecay(boundaries, values)


@dataclasses.dataclass(frozen=True)
class OptimizerConfig:
    learning_rates: tuple = (1e-4,)
    lr_boundaries: tuple = ()
    beta_1: float = 0.9
    beta_2: float = 0.999
    mixed_precision: bool = False


def build_state(
    strategy,
    phase,
    generator_config,
    hr_patch_size,
    optimizer_config,
    perceptual_network="vgg54",
    perceptual_weights="imagenet",
):
    """Builds models, optimizers and the step variable inside `strategy.scope()`."""
    oc = optimizer_config

    def optimizer(model):
        schedule = learning_rate_schedule(oc.learning_rates, oc.lr_boundaries)
        return steps.create_optimizer(
            schedule, oc.beta_1, oc.beta_2, oc.mixed_precision, model.trainable_variables
        )

    with strategy.scope():
        generator = generator_store.build_generator(generator_config)
        state = TrainState(
            generator=generator,
            g_optimizer=optimizer(generator),
            global_step=tf.Variable(
                0,
                dtype=tf.int64,
                trainable=False,
                name=STEP_VARIABLE_NAME,
                aggregation=tf.VariableAggregation.ONLY_FIRST_REPLICA,
            ),
        )
        if phase == generator_store.GAN:
            state.discriminator = models.srgan_discriminator(hr_patch_size)
            state.d_optimizer = optimizer(state.discriminator)
            state.content_model = perceptual.build_content_model(
                perceptual_network, perceptual_weights
            )
    return state


def apply_learning_rates(state, optimizer_config):
    """Makes a constant learning rate follow the config after a restore.

    A constant rate is an optimizer variable, so restoring a checkpoint would bring back the
    old run's value and silently ignore a changed --learning_rate; a schedule is not saved.
    """
    schedule = learning_rate_schedule(
        optimizer_config.learning_rates, optimizer_config.lr_boundaries
    )
    if isinstance(schedule, float):
        for optimizer in (state.g_optimizer, state.d_optimizer):
            if optimizer is not None:
                optimizer.learning_rate = schedule


def make_checkpoint(state):
    """The tf.train.Checkpoint of a phase; the generator key is generator_store's.

    No input iterator: tf.distribute iterators are not Trackable in TF 2.21 (see
    trainer.loop._input_config for how a resumed run seeds its input instead).
    """
    objects = {
        generator_store.GENERATOR_KEY: state.generator,
        "g_optimizer": state.g_optimizer,
        STEP_VARIABLE_NAME: state.global_step,
    }
    if state.discriminator is not None:
        objects.update(discriminator=state.discriminator, d_optimizer=state.d_optimizer)
    return tf.train.Checkpoint(**objects)


def restore_or_initialize(manager, checkpoint, state, phase, model_dir, init_checkpoint=None):
    """Resumes the phase's own latest checkpoint, else seeds the GAN generator; returns a note.

    Raises:
      FileNotFoundError: a GAN phase with no checkpoint of its own, no --init_checkpoint and no
        pretrain checkpoint to start from.
    """
    if manager.latest_checkpoint:
        checkpoint.restore(manager.latest_checkpoint).assert_existing_objects_matched()
        return f"resumed from {manager.latest_checkpoint} at step {state.step()}"
    source = init_checkpoint
    if source is None and phase == generator_store.GAN:
        source = tf.train.latest_checkpoint(
            generator_store.phase_dir(model_dir, generator_store.PRETRAIN)
        )
        if source is None:
            raise FileNotFoundError(
                f"--phase=gan found no checkpoint in {manager.directory}, none in "
                f"{generator_store.phase_dir(model_dir, generator_store.PRETRAIN)} and no "
                "--init_checkpoint: run --phase=pretrain first (same --model_dir) or pass "
                "--init_checkpoint=PREFIX."
            )
    if source is None:
        return "started from scratch"
    if not tf.io.gfile.exists(source + ".index"):
        raise FileNotFoundError(
            f"--init_checkpoint={source}: no such checkpoint ({source}.index is missing)."
        )
    status = tf.train.Checkpoint(**{generator_store.GENERATOR_KEY: state.generator}).read(source)
    status.expect_partial().assert_existing_objects_matched()
    logging.info("Generator initialised from %s.", source)
    return f"generator initialised from {source}"
