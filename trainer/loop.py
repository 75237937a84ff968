"""The training loop (Orbit-style controller): resume, run steps, checkpoint, report, stop cleanly.

The step itself (losses, gradients, optimizer updates, XLA) is trainer.steps; this module owns
everything around it: the global step, the CheckpointManager of MODEL_DIR/<phase>/, summaries,
validation, image grids, SIGTERM and non-finite losses.
"""

import dataclasses
import math
import posixpath
import signal

import keras
import tensorflow as tf
from absl import logging

from trainer import (
    evaluation,
    generator_store,
    input_pipeline,
    losses,
    reporting,
    steps,
    train_input,
    train_state,
)
from trainer import strategy as strategy_lib


class NonFiniteLossError(RuntimeError):
    """A loss became NaN or infinite; the run stopped without saving."""


@dataclasses.dataclass(frozen=True)
class TrainConfig:
    """One phase of training. Step counts are totals for the phase (a resumed run continues)."""

    data_dir: str
    model_dir: str
    phase: str = generator_store.PRETRAIN
    train_steps: int = 1000
    global_batch_size: int = 16
    hr_patch_size: int = 96
    num_blocks: int = 16
    channels: int = 64
    bicubic_skip: bool = False
    optimizer: train_state.OptimizerConfig = train_state.OptimizerConfig()
    loss: losses.LossConfig = losses.LossConfig()
    perceptual_network: str = "vgg54"
    perceptual_weights: str = "imagenet"
    steps_per_loop: int = 1
    xla: str = "off"
    checkpoint_steps: int = 1000
    max_checkpoints: int = 5
    log_steps: int = 100
    eval_steps: int = 0  # 0: no validation during training
    image_steps: int = 0  # 0: no image grids
    num_grid_images: int = 4
    init_checkpoint: str | None = None
    seed: int | None = None
    replay_input_on_resume: bool = False  # with a seed: a resumed run continues the same stream
    crops_per_image: int | None = None  # None: the input pipeline's default
    shuffle_buffer: int | None = None

    def __post_init__(self):
        if self.phase not in generator_store.PHASES:
            raise ValueError(f"phase must be one of {generator_store.PHASES}, got {self.phase!r}.")
        for name in (
            "train_steps",
            "global_batch_size",
            "steps_per_loop",
            "checkpoint_steps",
            "log_steps",
        ):
            if getattr(self, name) <= 0:
                raise ValueError(f"{name} must be > 0, got {getattr(self, name)}.")


def _every(step, previous, interval):
    return interval > 0 and step // interval > previous // interval


def _next_stop(step, config):
    """The next step at which the loop must come back to Python (a log/save/eval boundary)."""
    stops = [config.train_steps, step + config.steps_per_loop]
    for interval in (
        config.checkpoint_steps,
        config.log_steps,
        config.eval_steps,
        config.image_steps,
    ):
        if interval > 0:
            stops.append((step // interval + 1) * interval)
    return min(stops)


class Controller:
    """Builds a phase's state in the strategy scope, restores it, and runs it to train_steps."""

    def __init__(self, config: TrainConfig, strategy):
        self.config = config
        self.strategy = strategy
        self.is_chief = strategy_lib.is_chief(strategy)
        self.manifest = input_pipeline.open_dataset(
            config.data_dir, config.hr_patch_size, split="train"
        )
        self.generator_config = generator_store.GeneratorConfig(
            scale=self.manifest.scale,
            num_blocks=config.num_blocks,
            channels=config.channels,
            bicubic_skip=config.bicubic_skip,
        )
        if self.is_chief:
            generator_store.write_config(config.model_dir, self.generator_config)
        self.state = self._build_state()
        self.phase_dir = generator_store.phase_dir(config.model_dir, config.phase)
        self.write_dir = strategy_lib.write_dir(self.phase_dir, strategy)
        self.checkpoint = train_state.make_checkpoint(self.state)
        self.manager = tf.train.CheckpointManager(
            self.checkpoint,
            self.write_dir,
            max_to_keep=config.max_checkpoints,
            step_counter=self.state.global_step,
        )
        self._restore()
        dataset = strategy.distribute_datasets_from_function(
            train_input.input_fn(config, self.state.step())
        )
        self.iterator = iter(dataset)
        self.reporter = reporting.Reporter(
            posixpath.join(self.write_dir, "summaries"),
            posixpath.join(self.write_dir, "images"),
            config.train_steps,
        )
        self._loop_fns = {}
        self._stop_requested = False
        self._saved_step = self.state.step()

    def _build_state(self):
        config = self.config
        if config.seed is not None:
            keras.utils.set_random_seed(config.seed)
        previous_policy = keras.mixed_precision.global_policy()
        if config.optimizer.mixed_precision:
            # Models built under this policy compute in float16 and keep float32 variables.
            keras.mixed_precision.set_global_policy("mixed_float16")
        try:
            return train_state.build_state(
                self.strategy,
                config.phase,
                self.generator_config,
                config.hr_patch_size,
                config.optimizer,
                config.perceptual_network,
                config.perceptual_weights,
            )
        finally:
            keras.mixed_precision.set_global_policy(previous_policy)

    def _restore(self):
        # Every worker restores from the chief's directory, where the real checkpoints are.
        chief_manager = tf.train.CheckpointManager(self.checkpoint, self.phase_dir, None)
        note = train_state.restore_or_initialize(
            chief_manager,
            self.checkpoint,
            self.state,
            self.config.phase,
            self.config.model_dir,
            self.config.init_checkpoint,
        )
        train_state.apply_learning_rates(self.state, self.config.optimizer)
        logging.info("Phase %s: %s.", self.config.phase, note)

    # -- the step -----------------------------------------------------------------------------

    def _loop_fn(self, num_steps):
        """The compiled loop of `num_steps` steps (one trace per distinct length)."""
        if num_steps not in self._loop_fns:
            step_config = steps.StepConfig(
                phase=self.config.phase,
                global_batch_size=self.config.global_batch_size,
                steps_per_loop=num_steps,
                xla=steps.resolve_xla_mode(self.config.xla, self.strategy),
                mixed_precision=self.config.optimizer.mixed_precision,
                loss=self.config.loss,
            )
            s = self.state
            self._loop_fns[num_steps] = steps.build_train_loop_fn(
                self.strategy,
                step_config,
                s.generator,
                s.discriminator,
                s.content_model,
                s.g_optimizer,
                s.d_optimizer,
            )
        return self._loop_fns[num_steps]

    def _check_finite(self, step, metrics):
        bad = {k: v for k, v in metrics.items() if not math.isfinite(v)}
        if bad:
            raise NonFiniteLossError(
                f"Non-finite loss at step {step}: {bad}. Stopped WITHOUT saving; the last good "
                f"checkpoint ({tf.train.latest_checkpoint(self.phase_dir) or 'none yet'}) is "
                "intact. Try a lower learning rate, or --mixed_precision off."
            )

    # -- around the step ----------------------------------------------------------------------

    def save(self):
        path = self.manager.save(checkpoint_number=self.state.global_step)
        self._saved_step = self.state.step()
        if self.is_chief:
            logging.info("Saved %s.", path)

    def _validation_split(self):
        info = self.manifest.splits.get("validation")
        return "validation" if info and info.num_examples else None

    def evaluate(self, step):
        split = self._validation_split()
        if split is None:
            logging.warning("No validation split in %s: skipping validation.", self.config.data_dir)
            return {}
        dataset = input_pipeline.make_validation_dataset(self.config.data_dir, split=split)
        results = evaluation.evaluate_validation(self.state.generator, dataset, self.manifest.scale)
        self.reporter.validation(step, results)
        return results

    def write_images(self, step):
        split = self._validation_split() or "train"
        info = self.manifest.splits[split]
        scale = self.manifest.scale
        side = (
            min(
                self.config.hr_patch_size * 2, info.min_lr_height * scale, info.min_lr_width * scale
            )
            // scale
            * scale
        )
        dataset = input_pipeline.make_validation_dataset(
            self.config.data_dir,
            split=split,
            hr_crop_size=side,
            batch_size=self.config.num_grid_images,
        )
        batch = next(iter(dataset))
        sr = self.state.generator(batch["lr"], training=False)
        self.reporter.images(step, reporting.image_grid(batch["lr"], sr, batch["hr"]))

    def _on_sigterm(self, signum, frame):
        del signum, frame
        logging.warning("SIGTERM: saving a checkpoint after the current loop, then exiting.")
        self._stop_requested = True

    # -- the loop -----------------------------------------------------------------------------

    def run(self):
        """Trains to config.train_steps (or until SIGTERM); returns the last metrics dict."""
        previous = signal.signal(signal.SIGTERM, self._on_sigterm)
        try:
            return self._run()
        finally:
            signal.signal(signal.SIGTERM, previous)
            self.reporter.flush()
            strategy_lib.remove_worker_dir(self.write_dir, self.strategy)

    def _run(self):
        config, step = self.config, self.state.step()
        metrics = {}
        self.reporter.start(step)
        while step < config.train_steps and not self._stop_requested:
            previous, count = step, _next_stop(step, config) - step
            outputs = self._loop_fn(count)(self.iterator)
            metrics = {k: float(v) for k, v in outputs.items()}
            step += count
            self._check_finite(step, metrics)
            self.state.global_step.assign(step)
            if _every(step, previous, config.log_steps) or step == config.train_steps:
                self.reporter.train_scalars(step, metrics, self.state.learning_rate())
            if _every(step, previous, config.checkpoint_steps) or step == config.train_steps:
                self.save()
            # Validation and images are local work: only the chief spends time on them.
            if _every(step, previous, config.eval_steps) and self.is_chief:
                self.evaluate(step)
            if _every(step, previous, config.image_steps) and self.is_chief:
                self.write_images(step)
            if _every(step, previous, config.eval_steps) or _every(
                step, previous, config.image_steps
            ):
                self.reporter.start(step)
        if self._stop_requested and step != self._saved_step:
            self.save()
        logging.info("Phase %s stopped at step %d/%d.", config.phase, step, config.train_steps)
        return metrics


def train(config: TrainConfig, strategy):
    """Builds a Controller and runs it; returns (final step, last metrics)."""
    controller = Controller(config, strategy)
    metrics = controller.run()
    return controller.state.step(), metrics
