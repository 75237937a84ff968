"""Everything a training run checkpoints: models, optimizers and the step counter.

Built inside the strategy scope, so variables are mirrored and the Keras 3 optimizers are built
on the models' variables before the first distributed step (keras-team/keras#19246).
"""

import dataclasses

import keras
import tensorflow as tf
from absl import logging

from trainer import config as config_lib
from trainer import ema as ema_lib
from trainer import generator_store, models, perceptual, steps

STEP_VARIABLE_NAME = "global_step"


@dataclasses.dataclass
class TrainState:
    """The trainable objects of one phase (discriminator, content model, d_optimizer: GAN only;
    ema_generator: with an EMA decay)."""

    generator: keras.Model
    g_optimizer: keras.optimizers.Optimizer
    global_step: tf.Variable
    discriminator: keras.Model | None = None
    d_optimizer: keras.optimizers.Optimizer | None = None
    content_model: keras.Model | None = None
    ema_generator: keras.Model | None = None

    @property
    def inference_generator(self):
        """What validation and image grids run: the EMA when there is one."""
        return self.ema_generator if self.ema_generator is not None else self.generator

    def step(self):
        return int(self.global_step.numpy())

    def learning_rate(self):
        """The generator optimizer's current learning rate (follows its schedule)."""
        return float(keras.ops.convert_to_numpy(self.g_optimizer.learning_rate))


def learning_rate_schedule(schedule: config_lib.ScheduleConfig):
    """The optimizer's learning rate: a float when constant, else a piecewise-constant schedule
    over the optimizer's step (the ScheduleConfig has checked values and boundaries)."""
    if not schedule.lr_boundaries:
        return schedule.learning_rates[0]
    return keras.optimizers.schedules.PiecewiseConstantDecay(
        list(schedule.lr_boundaries), list(schedule.learning_rates)
    )


def build_state(strategy, config: config_lib.RunConfig):
    """Builds the phase's models, optimizers and step variable inside `strategy.scope()`.

    Seeds Keras from config.seed first; with mixed precision the models are built under the
    mixed_float16 policy (the global policy is restored afterwards).
    """
    if config.seed is not None:
        keras.utils.set_random_seed(config.seed)
    previous_policy = keras.mixed_precision.global_policy()
    if config.optimizer.mixed_precision:
        # Models built under this policy compute in float16 and keep float32 variables.
        keras.mixed_precision.set_global_policy("mixed_float16")
    try:
        with strategy.scope():
            return _build_in_scope(config)
    finally:
        keras.mixed_precision.set_global_policy(previous_policy)


def _build_in_scope(config):
    oc = config.optimizer

    def optimizer(model):
        return steps.create_optimizer(
            learning_rate_schedule(config.schedule),
            oc.beta_1,
            oc.beta_2,
            oc.mixed_precision,
            model.trainable_variables,
        )

    generator = generator_store.build_generator(config.generator)
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
    if oc.ema_decay > 0:
        state.ema_generator = generator_store.build_generator(config.generator)
    if config.phase == config_lib.GAN:
        state.discriminator = build_discriminator(config.discriminator, config.input.hr_patch_size)
        state.d_optimizer = optimizer(state.discriminator)
        loss = config.step.loss
        state.content_model = perceptual.build_content_model(
            loss.perceptual_network,
            loss.perceptual_weights,
            layers_=[name for name, _ in loss.perceptual_layers] or None,
        )
    return state


def build_discriminator(config: config_lib.DiscriminatorConfig, hr_patch_size):
    """The discriminator a DiscriminatorConfig names (vgg needs the patch size: dense head)."""
    if config.architecture == "unet":
        return models.unet_discriminator(config.channels)
    return models.srgan_discriminator(hr_patch_size, config.channels)


def apply_learning_rates(state, schedule: config_lib.ScheduleConfig):
    """Makes a constant learning rate follow the config after a restore.

    A constant rate is an optimizer variable, so restoring a checkpoint would bring back the
    old run's value and silently ignore a changed --learning_rate; a schedule is not saved.
    """
    rate = learning_rate_schedule(schedule)
    if isinstance(rate, float):
        for optimizer in (state.g_optimizer, state.d_optimizer):
            if optimizer is not None:
                optimizer.learning_rate = rate


def make_checkpoint(state, include_ema=True):
    """The tf.train.Checkpoint of a phase; the generator key is generator_store's.

    No input iterator: tf.distribute iterators are not Trackable in TF 2.21 (see
    trainer.train_input.input_fn for how a resumed run seeds or replays its input instead).
    """
    objects = {
        generator_store.GENERATOR_KEY: state.generator,
        "g_optimizer": state.g_optimizer,
        STEP_VARIABLE_NAME: state.global_step,
    }
    if state.discriminator is not None:
        objects.update(discriminator=state.discriminator, d_optimizer=state.d_optimizer)
    if state.ema_generator is not None and include_ema:
        objects[ema_lib.EMA_KEY] = state.ema_generator
    return tf.train.Checkpoint(**objects)


def _start_ema(state, prefix=None):
    """Starts the EMA at the generator's weights unless `prefix` restored one; returns a note."""
    if state.ema_generator is None or (
        prefix is not None and generator_store.checkpoint_has_ema(prefix)
    ):
        return ""
    ema_lib.copy(state.ema_generator, state.generator)
    return "; generator EMA started from the generator's weights"


def restore_or_initialize(manager, checkpoint, state, phase, model_dir, init_checkpoint=None):
    """Resumes the phase's own latest checkpoint, else seeds the GAN generator; returns a note.

    Raises:
      FileNotFoundError: a GAN phase with no checkpoint of its own, no --init_checkpoint and no
        pretrain checkpoint to start from.
    """
    if manager.latest_checkpoint:
        prefix = manager.latest_checkpoint
        if state.ema_generator is not None and not generator_store.checkpoint_has_ema(prefix):
            # --ema_decay turned on in a resumed run: everything else must still match.
            checkpoint = make_checkpoint(state, include_ema=False)
        try:
            checkpoint.restore(prefix).assert_existing_objects_matched()
        except (AssertionError, ValueError) as e:
            # generator.json already matched: the discriminator (or the optimizers) differ;
            # a different shape fails the assignment, a missing object the assertion.
            raise ValueError(
                f"{prefix} does not hold this run's models (another --discriminator or "
                f"--discriminator_channels than the run that wrote it?): {str(e)[:300]}"
            ) from None
        note = _start_ema(state, prefix)
        return f"resumed from {manager.latest_checkpoint} at step {state.step()}{note}"
    source = init_checkpoint
    if source is None and phase == config_lib.GAN:
        source = tf.train.latest_checkpoint(
            generator_store.phase_dir(model_dir, config_lib.PRETRAIN)
        )
        if source is None:
            raise FileNotFoundError(
                f"--phase=gan found no checkpoint in {manager.directory}, none in "
                f"{generator_store.phase_dir(model_dir, config_lib.PRETRAIN)} and no "
                "--init_checkpoint: run --phase=pretrain first (same --model_dir) or pass "
                "--init_checkpoint=PREFIX."
            )
    if source is None:
        return "started from scratch" + _start_ema(state)
    if not tf.io.gfile.exists(source + ".index"):
        raise FileNotFoundError(
            f"--init_checkpoint={source}: no such checkpoint ({source}.index is missing)."
        )
    # A source with a moving average starts the phase from it, as Real-ESRGAN's GAN starts from
    # RealESRNet's params_ema and ESRGAN's from the released (EMA) PSNR model.
    key = generator_store.GENERATOR_KEY
    if generator_store.checkpoint_has_ema(source):
        key = generator_store.EMA_KEY
    status = tf.train.Checkpoint(**{key: state.generator}).read(source)
    status.expect_partial().assert_existing_objects_matched()
    weights = "EMA" if key == generator_store.EMA_KEY else "raw"
    logging.info("Generator initialised from %s (%s weights).", source, weights)
    return f"generator initialised from {source} ({weights} weights)" + _start_ema(state)
