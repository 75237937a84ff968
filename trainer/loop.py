"""The training loop (Orbit-style controller): run steps, checkpoint, report, stop cleanly.

The step itself (losses, gradients, optimizer updates, XLA) is trainer.steps. `build_controller`
assembles a phase's parts (state restored from its checkpoints, CheckpointManager, distributed
input, reporter, validation and image callables) and hands them to a `Controller`, which owns
what happens around the step: the global step, checkpoints, summaries, validation, image grids,
SIGTERM and non-finite losses.
"""

import dataclasses
import math
import posixpath
import signal

import tensorflow as tf
from absl import logging

from data_prep import schema
from trainer import config as config_lib
from trainer import (
    degrade_batches,
    evaluation,
    generator_store,
    input_pipeline,
    reporting,
    steps,
    train_input,
    train_state,
    value_range,
)
from trainer import strategy as strategy_lib


class NonFiniteLossError(RuntimeError):
    """A loss became NaN or infinite; the run stopped without saving."""


def _every(step, previous, interval):
    return interval > 0 and step // interval > previous // interval


def _next_stop(step, train_steps, steps_per_loop, reporting_config):
    """The next step at which the loop must come back to Python (a log/save/eval boundary)."""
    stops = [train_steps, step + steps_per_loop]
    r = reporting_config
    for interval in (r.checkpoint_steps, r.log_steps, r.eval_steps, r.image_steps):
        if interval > 0:
            stops.append((step // interval + 1) * interval)
    return min(stops)


class Controller:
    """Runs a phase to its total step count from parts built elsewhere (see build_controller).

    Args:
      state: the restored train_state.TrainState.
      manager: the tf.train.CheckpointManager this worker saves with.
      iterator: the distributed training iterator, positioned for state.step().
      loop_fn: fn(num_steps) -> the tf.function running num_steps steps on the iterator.
      reporter: reporting.Reporter.
      train_steps: the phase's total steps.
      steps_per_loop: steps per loop-function call (shorter at log/save/eval boundaries).
      reporting_config: the ReportingConfig intervals.
      validate: fn() -> validation metrics dict, or None; called on the chief only.
      image_grid: fn() -> uint8 grid [H, W, 3], or None; called on the chief only.
      is_chief: this worker writes the real files.
      on_exit: called once after the run (a non-chief worker removes its temporary directory).
      phase: the phase's name (for messages).
    """

    def __init__(
        self,
        *,
        state,
        manager,
        iterator,
        loop_fn,
        reporter,
        train_steps,
        steps_per_loop,
        reporting_config,
        validate=None,
        image_grid=None,
        is_chief=True,
        on_exit=None,
        phase=config_lib.PRETRAIN,
    ):
        self.state = state
        self.manager = manager
        self.iterator = iterator
        self.reporter = reporter
        self.train_steps = train_steps
        self.steps_per_loop = steps_per_loop
        self.reporting = reporting_config
        self.is_chief = is_chief
        self.phase = phase
        self._loop_fn_builder = loop_fn
        self._validate = validate
        self._image_grid = image_grid
        self._on_exit = on_exit
        self._loop_fns = {}
        self._stop_requested = False
        self._saved_step = state.step()

    @property
    def checkpoint(self):
        return self.manager.checkpoint

    # -- the step -----------------------------------------------------------------------------

    def _loop_fn(self, num_steps):
        """The compiled loop of `num_steps` steps (one trace per distinct length)."""
        if num_steps not in self._loop_fns:
            self._loop_fns[num_steps] = self._loop_fn_builder(num_steps)
        return self._loop_fns[num_steps]

    def _check_finite(self, step, metrics):
        bad = {k: v for k, v in metrics.items() if not math.isfinite(v)}
        if bad:
            last = tf.train.latest_checkpoint(self.manager.directory) or "none yet"
            raise NonFiniteLossError(
                f"Non-finite loss at step {step}: {bad}. Stopped WITHOUT saving; the last good "
                f"checkpoint ({last}) is intact. Try a lower learning rate, or "
                "--mixed_precision off."
            )

    # -- around the step ----------------------------------------------------------------------

    def save(self):
        path = self.manager.save(checkpoint_number=self.state.global_step)
        self._saved_step = self.state.step()
        if self.is_chief:
            logging.info("Saved %s.", path)

    def evaluate(self, step):
        """Runs the validation callable and reports its metrics ({} without one)."""
        if self._validate is None:
            return {}
        results = self._validate()
        self.reporter.validation(step, results)
        return results

    def write_images(self, step):
        if self._image_grid is not None:
            self.reporter.images(step, self._image_grid())

    def _on_sigterm(self, signum, frame):
        del signum, frame
        logging.warning("SIGTERM: saving a checkpoint after the current loop, then exiting.")
        self._stop_requested = True

    # -- the loop -----------------------------------------------------------------------------

    def run(self):
        """Trains to train_steps (or until SIGTERM); returns the last metrics dict."""
        previous = signal.signal(signal.SIGTERM, self._on_sigterm)
        try:
            return self._run()
        finally:
            signal.signal(signal.SIGTERM, previous)
            self.reporter.flush()
            if self._on_exit is not None:
                self._on_exit()

    def _run(self):
        step, total, r = self.state.step(), self.train_steps, self.reporting
        metrics = {}
        self.reporter.start(step)
        while step < total and not self._stop_requested:
            previous = step
            count = _next_stop(step, total, self.steps_per_loop, r) - step
            outputs = self._loop_fn(count)(self.iterator)
            metrics = {k: float(v) for k, v in outputs.items()}
            step += count
            self._check_finite(step, metrics)
            self.state.global_step.assign(step)
            if _every(step, previous, r.log_steps) or step == total:
                self.reporter.train_scalars(step, metrics, self.state.learning_rate())
            if _every(step, previous, r.checkpoint_steps) or step == total:
                self.save()
            # Validation and images are local work: only the chief spends time on them.
            if _every(step, previous, r.eval_steps) and self.is_chief:
                self.evaluate(step)
            if _every(step, previous, r.image_steps) and self.is_chief:
                self.write_images(step)
            if _every(step, previous, r.eval_steps) or _every(step, previous, r.image_steps):
                self.reporter.start(step)
        if self._stop_requested and step != self._saved_step:
            self.save()
        logging.info("Phase %s stopped at step %d/%d.", self.phase, step, total)
        return metrics


# -- the builder ------------------------------------------------------------------------------


def _restore(config, state, checkpoint, phase_dir):
    # Every worker restores from the chief's directory, where the real checkpoints are.
    chief_manager = tf.train.CheckpointManager(checkpoint, phase_dir, None)
    note = train_state.restore_or_initialize(
        chief_manager, checkpoint, state, config.phase, config.model_dir, config.init_checkpoint
    )
    train_state.apply_learning_rates(state, config.schedule)
    logging.info("Phase %s: %s.", config.phase, note)


def _loop_fn_builder(strategy, config, state, prepare_batch=None):
    def build(num_steps):
        step_config = dataclasses.replace(config.step, steps_per_loop=num_steps)
        return steps.build_train_loop_fn(
            strategy,
            step_config,
            state.generator,
            state.discriminator,
            state.content_model,
            state.g_optimizer,
            state.d_optimizer,
            ema_generator=state.ema_generator,
            ema_decay=config.optimizer.ema_decay,
            prepare_batch=prepare_batch,
            step_counter=state.global_step,
        )

    return build


def _validation_fn(source, generator):
    """fn() -> validation metrics, or None when the dataset has no validation examples."""
    if not source.has_examples(schema.VALIDATION):
        logging.warning("No validation split in %s: validation is off.", source.data_dir)
        return None

    def validate():
        dataset = input_pipeline.make_validation_dataset(source, schema.VALIDATION)
        return evaluation.evaluate_validation(generator, dataset, source.scale)

    return validate


def _image_grid_fn(source, generator, hr_patch_size, num_images):
    """fn() -> the LR/bicubic/SR/HR grid of the first validation (else train) examples."""
    split = schema.VALIDATION if source.has_examples(schema.VALIDATION) else schema.TRAIN
    info, scale = source.manifest.splits[split], source.scale
    side = min(hr_patch_size * 2, info.min_lr_height * scale, info.min_lr_width * scale)
    side = side // scale * scale

    def grid():
        dataset = input_pipeline.make_validation_dataset(
            source, split=split, hr_crop_size=side, batch_size=num_images
        )
        batch = next(iter(dataset))
        sr = value_range.generate_uint8(generator, batch["lr"])
        return reporting.image_grid(batch["lr"], sr, batch["hr"], scale)

    return grid


def build_controller(config: config_lib.RunConfig, source: input_pipeline.DataSource, strategy):
    """Builds a phase's parts under `strategy`, restores them, and hands them to a Controller.

    Args:
      config: the run's configuration (its generator's scale is the dataset's).
      source: the dataset, opened once (input_pipeline.open_dataset).
      strategy: the tf.distribute strategy.

    Raises:
      ValueError: the generator's scale is not the dataset's, or a model_dir that holds another
        generator; a patch size the data cannot serve.
      FileNotFoundError: a GAN phase with nothing to start from.
    """
    if config.generator.scale != source.scale:
        raise ValueError(
            f"The generator is configured for x{config.generator.scale}; the dataset "
            f"{source.data_dir} is x{source.scale}."
        )
    # "step" with several replicas (and "default" on GPU) is resolved here against the models;
    # the effective mode is logged once.
    xla = steps.resolve_xla_mode(config.step.xla, strategy, config)
    config = dataclasses.replace(config, step=dataclasses.replace(config.step, xla=xla))
    is_chief = strategy_lib.is_chief(strategy)
    if is_chief:
        generator_store.write_config(config.model_dir, config.generator)
    state = train_state.build_state(strategy, config)
    phase_dir = generator_store.phase_dir(config.model_dir, config.phase)
    write_dir = strategy_lib.write_dir(phase_dir, strategy)
    checkpoint = train_state.make_checkpoint(state)
    manager = tf.train.CheckpointManager(
        checkpoint,
        write_dir,
        max_to_keep=config.reporting.max_checkpoints,
        step_counter=state.global_step,
    )
    _restore(config, state, checkpoint, phase_dir)
    choice = config.degradation
    degradation_seed = degrade_batches.run_seed(config.seed) if choice.prepares_batches else None
    dataset = strategy.distribute_datasets_from_function(
        train_input.input_fn(source, config, state.step(), degradation_seed)
    )
    reporter = reporting.Reporter(
        posixpath.join(write_dir, "summaries"),
        posixpath.join(write_dir, "images"),
        config.schedule.train_steps,
    )
    return Controller(
        state=state,
        manager=manager,
        iterator=iter(dataset),
        loop_fn=_loop_fn_builder(
            strategy,
            config,
            state,
            degrade_batches.prepare_fn(choice, source.scale, degradation_seed),
        ),
        reporter=reporter,
        train_steps=config.schedule.train_steps,
        steps_per_loop=config.step.steps_per_loop,
        reporting_config=config.reporting,
        validate=_validation_fn(source, state.inference_generator)
        if config.reporting.eval_steps
        else None,
        image_grid=(
            _image_grid_fn(
                source,
                state.inference_generator,
                config.input.hr_patch_size,
                config.reporting.num_grid_images,
            )
            if config.reporting.image_steps
            else None
        ),
        is_chief=is_chief,
        on_exit=lambda: strategy_lib.remove_worker_dir(write_dir, strategy),
        phase=config.phase,
    )


def train(config: config_lib.RunConfig, source: input_pipeline.DataSource, strategy):
    """Builds a Controller and runs it; returns (final step, last metrics)."""
    controller = build_controller(config, source, strategy)
    metrics = controller.run()
    return controller.state.step(), metrics
