"""The training step: pure, tf.function-safe, built from the models, losses and optimizers.

The loop (trainer/loop.py) owns checkpoints, summaries and the global step; it calls the function
returned by `build_train_loop_fn` once per `steps_per_loop` steps with a distributed iterator.

XLA modes (`config.StepConfig.xla`, resolved once by `resolve_xla_mode` / config.resolve_xla):
  off:  a plain tf.function.
  step: the whole replica step (forward, losses, gradients, both optimizer updates and the loss
        scaling) compiled with jit_compile=True. One replica only: under MirroredStrategy a
        nested jit_compile function cannot contain `merge_call`, which the optimizers' gradient
        all-reduce needs. With several replicas `step` resolves to:
  replica_gradients: (BN-free models, config.replica_gradients_blocker) each replica's forward
        passes, losses and gradients are one jit_compile function per update; the gradient
        all-reduce, the loss scaling's decisions and the optimizer updates run outside XLA.
        The GAN step compiles two functions (discriminator gradients, then generator gradients
        scored by the updated discriminator), so the generator's forward pass runs twice.
        Models with synchronised BatchNorm (srresnet, the vgg discriminator) fall back to
        `auto`: BN's statistics all-reduce needs merge_call too. The unet discriminator is
        eligible: its spectral-norm iterate `sn_u` is a replica-local (on-read) variable.
        The ragan loss is not (a cross-replica mean inside the loss).
  auto: XLA auto-clustering (tf.config.optimizer.set_jit), a process-wide setting made here, before
        the step is traced. TensorFlow only auto-clusters on GPU unless the process was started with
        TF_XLA_FLAGS=--tf_xla_cpu_global_jit, so on CPU `auto` is normally the same as `off`.
"""

import functools

import keras
import tensorflow as tf
from absl import logging

from trainer import config as config_lib
from trainer import ema as ema_lib
from trainer import loss_scaling, losses

PRETRAIN_METRICS = ("pixel_loss",)
GAN_METRICS = (
    "g_loss",
    "content_loss",
    "adversarial_loss",
    "pixel_loss",
    "d_loss",
    "d_real",
    "d_fake",
)
# Measured with benchmarks.step on the 2-core CPU machine: auto = off (no CPU clustering), step
# 0.5x (pretrain) to 0.85x (gan) of off; see the README.
CPU_DEFAULT_XLA = "off"


def metric_names(phase):
    """The metrics a phase's loop function returns, in order."""
    return PRETRAIN_METRICS if phase == config_lib.PRETRAIN else GAN_METRICS


def create_optimizer(learning_rate, beta_1, beta_2, mixed_precision, variables):
    """Adam (loss-scaled when mixed_precision), built on `variables` in the current strategy scope.

    Call it inside `strategy.scope()`: Keras 3 optimizers must create their slots there before
    the first distributed step (keras-team/keras#19246).

    Args:
      learning_rate: a float or a keras.optimizers.schedules.LearningRateSchedule.
      beta_1: Adam beta_1.
      beta_2: Adam beta_2.
      mixed_precision: wrap in keras.optimizers.LossScaleOptimizer (dynamic loss scale).
      variables: the trainable variables the optimizer will update.
    """
    optimizer = keras.optimizers.Adam(learning_rate=learning_rate, beta_1=beta_1, beta_2=beta_2)
    if mixed_precision:
        optimizer = keras.optimizers.LossScaleOptimizer(optimizer)
    optimizer.build(variables)
    return optimizer


def _uses_gpu(strategy):
    try:
        devices = strategy.extended.worker_devices
    except RuntimeError:  # the default strategy: wherever TensorFlow places ops
        return bool(tf.config.list_logical_devices("GPU"))
    return any("GPU" in device.upper() for device in devices)


def resolve_xla_mode(xla, strategy, run_config=None):
    """The XLA mode the step will use under `strategy` (config.resolve_xla decides).

    "default" picks the fastest that works: on GPU "step" (several replicas: replica_gradients
    for BN-free models, else auto); on CPU CPU_DEFAULT_XLA (measured). Without `run_config`,
    "step" with several replicas stays "step" until it is resolved against the run's models
    (loop.build_controller does). With it, the effective mode is logged, with the reason.

    Args:
      xla: one of config.XLA_MODES, config.XLA_DEFAULT, or an already resolved mode.
      strategy: the tf.distribute strategy.
      run_config: a config.RunConfig (its models and phase), or None.

    Returns:
      One of config.RESOLVED_XLA_MODES.
    """
    models = None
    if run_config is not None:
        models = (
            run_config.phase,
            run_config.generator.architecture,
            run_config.discriminator.architecture,
            run_config.step.loss.gan_loss,
        )
    mode, reason = config_lib.resolve_xla(
        xla,
        gpu=_uses_gpu(strategy),
        num_replicas=strategy.num_replicas_in_sync,
        cpu_default=CPU_DEFAULT_XLA,
        models=models,
    )
    if run_config is not None:
        log = logging.warning if xla == "step" and mode == "auto" else logging.info
        log(
            "XLA: effective mode %s (requested %s, %d replica(s)): %s.",
            mode,
            xla,
            strategy.num_replicas_in_sync,
            reason,
        )
    return mode


def unpack_batch(batch):
    """(lr, hr) or (lr, hr, hr_real) -> (lr, hr, hr_real).

    hr is the target of the pixel and perceptual losses; hr_real is what the discriminator sees
    as real. They differ when the targets are unsharp-masked (Real-ESRGAN's l1_gt_usm and
    percep_gt_usm, but not gan_gt_usm: trainer.degrade_batches).
    """
    if len(batch) == 2:
        lr, hr = batch
        return lr, hr, hr
    lr, hr, hr_real = batch
    return lr, hr, hr_real


def _pretrain_step_fn(config, generator, g_optimizer):
    def replica_step(batch):
        lr, hr, _ = unpack_batch(batch)
        with tf.GradientTape() as tape:
            sr = generator(lr, training=True)
            pixel = losses.average(losses.pixel_loss(hr, sr, config.loss.pixel_loss))
            scaled = g_optimizer.scale_loss(pixel)
        loss_scaling.apply_gradients(g_optimizer, tape, scaled, generator.trainable_variables)
        return {"pixel_loss": pixel}

    return replica_step


def _gan_step_fn(
    config, generator, discriminator, content_model, content_loss_fn, g_optimizer, d_optimizer
):
    weights = config.loss
    ragan = weights.gan_loss == "ragan"
    d_loss_fn = losses.relativistic_discriminator_loss if ragan else losses.discriminator_loss

    def adversarial_loss(hr_real, fake_logits):
        if not ragan:
            return losses.generator_adversarial_loss(fake_logits)
        # RaGAN scores the generator against the real images too, by the updated discriminator.
        real_logits = tf.stop_gradient(discriminator(hr_real, training=True))
        return losses.relativistic_generator_loss(real_logits, fake_logits)

    def discriminator_update(hr, sr):
        with tf.GradientTape() as tape:
            real_logits = discriminator(hr, training=True)
            fake_logits = discriminator(sr, training=True)
            d_loss = losses.average(d_loss_fn(real_logits, fake_logits))
            scaled = d_optimizer.scale_loss(d_loss)
        loss_scaling.apply_gradients(d_optimizer, tape, scaled, discriminator.trainable_variables)
        return {
            "d_loss": d_loss,
            "d_real": losses.average(losses.probability(real_logits)),
            "d_fake": losses.average(losses.probability(fake_logits)),
        }

    def replica_step(batch):
        lr, hr, hr_real = unpack_batch(batch)
        with tf.GradientTape() as tape:
            sr = generator(lr, training=True)
            # The paper's order: the discriminator learns from this batch first, then the
            # generator is scored by the updated discriminator (one generator forward pass).
            with tape.stop_recording():
                metrics = discriminator_update(hr_real, tf.stop_gradient(sr))
            fake_logits = discriminator(sr, training=True)
            content = losses.average(content_loss_fn(content_model, hr, sr))
            adversarial = losses.average(adversarial_loss(hr_real, fake_logits))
            pixel = losses.average(losses.pixel_loss(hr, sr, weights.pixel_loss))
            g_loss = (
                weights.content_weight * content
                + weights.adversarial_weight * adversarial
                + weights.pixel_weight * pixel
            )
            scaled = g_optimizer.scale_loss(g_loss)
        loss_scaling.apply_gradients(g_optimizer, tape, scaled, generator.trainable_variables)
        return {
            **metrics,
            "g_loss": g_loss,
            "content_loss": content,
            "adversarial_loss": adversarial,
            "pixel_loss": pixel,
        }

    return replica_step


class _Gradients:
    """Gradients computed already, in the shape of the tape loss_scaling.apply_gradients takes.

    The replica_gradients mode computes gradients inside an XLA function and applies them
    outside it; loss_scaling.apply_gradients then unscales them and all-reduces the finite flag
    exactly as for a tape.
    """

    def __init__(self, gradients):
        self._gradients = gradients

    def gradient(self, target, sources):
        del target, sources
        return self._gradients


def _compiled_gradients(loss_fn, variables):
    """A jit_compile fn(*args) -> (gradients of loss_fn's scaled loss w.r.t. variables, outputs).

    loss_fn(*args) -> (scaled_loss, outputs dict) runs under the tape inside the XLA function.
    """

    @tf.function(jit_compile=True)
    def compute(*args):
        with tf.GradientTape() as tape:
            scaled, outputs = loss_fn(*args)
        return tape.gradient(scaled, variables), outputs

    return compute


def _apply(optimizer, gradients, variables):
    # scaled_loss is unused with precomputed gradients.
    loss_scaling.apply_gradients(optimizer, _Gradients(gradients), None, variables)


def _pretrain_replica_gradients_fn(config, generator, g_optimizer):
    def loss_fn(lr, hr, hr_real):
        del hr_real
        sr = generator(lr, training=True)
        pixel = losses.average(losses.pixel_loss(hr, sr, config.loss.pixel_loss))
        return g_optimizer.scale_loss(pixel), {"pixel_loss": pixel}

    variables = generator.trainable_variables
    gradients = _compiled_gradients(loss_fn, variables)

    def replica_step(batch):
        grads, metrics = gradients(*unpack_batch(batch))
        _apply(g_optimizer, grads, variables)
        return metrics

    return replica_step


def _gan_replica_gradients_fn(
    config, generator, discriminator, content_model, content_loss_fn, g_optimizer, d_optimizer
):
    """The GAN step of `_gan_step_fn` with each update's gradients in one XLA function.

    The generator's output cannot cross from the discriminator's XLA function to the
    generator's with its gradient, so the generator's function runs the generator again
    (BN-free: the same output).
    """
    weights = config.loss
    ragan = weights.gan_loss == "ragan"
    d_loss_fn = losses.relativistic_discriminator_loss if ragan else losses.discriminator_loss

    def d_loss(lr, hr_real):
        sr = tf.stop_gradient(generator(lr, training=True))
        real_logits = discriminator(hr_real, training=True)
        fake_logits = discriminator(sr, training=True)
        loss = losses.average(d_loss_fn(real_logits, fake_logits))
        return d_optimizer.scale_loss(loss), {
            "d_loss": loss,
            "d_real": losses.average(losses.probability(real_logits)),
            "d_fake": losses.average(losses.probability(fake_logits)),
        }

    def g_loss(lr, hr, hr_real):
        sr = generator(lr, training=True)
        fake_logits = discriminator(sr, training=True)
        if ragan:
            real_logits = tf.stop_gradient(discriminator(hr_real, training=True))
            adversarial = losses.relativistic_generator_loss(real_logits, fake_logits)
        else:
            adversarial = losses.generator_adversarial_loss(fake_logits)
        content = losses.average(content_loss_fn(content_model, hr, sr))
        adversarial = losses.average(adversarial)
        pixel = losses.average(losses.pixel_loss(hr, sr, weights.pixel_loss))
        total = (
            weights.content_weight * content
            + weights.adversarial_weight * adversarial
            + weights.pixel_weight * pixel
        )
        return g_optimizer.scale_loss(total), {
            "g_loss": total,
            "content_loss": content,
            "adversarial_loss": adversarial,
            "pixel_loss": pixel,
        }

    d_variables = discriminator.trainable_variables
    g_variables = generator.trainable_variables
    d_gradients = _compiled_gradients(d_loss, d_variables)
    g_gradients = _compiled_gradients(g_loss, g_variables)

    def replica_step(batch):
        lr, hr, hr_real = unpack_batch(batch)
        grads, d_metrics = d_gradients(lr, hr_real)
        _apply(d_optimizer, grads, d_variables)
        # The generator is scored by the updated discriminator (the paper's order; automatic
        # control dependencies order the update before this read of the same variables).
        grads, g_metrics = g_gradients(lr, hr, hr_real)
        _apply(g_optimizer, grads, g_variables)
        return {**d_metrics, **g_metrics}

    return replica_step


def _batch_norm_layers(model):
    if model is None:
        return []
    return [
        layer
        for layer in model._flatten_layers()  # noqa: SLF001 (Keras' recursive layer walk)
        if isinstance(layer, keras.layers.BatchNormalization)
    ]


def _check_xla_mode(config, strategy, models):
    """Clear errors for modes the step cannot compile (a StepConfig built by hand)."""
    replicas = strategy.num_replicas_in_sync
    if config.xla == "step" and replicas > 1:
        raise ValueError(
            f"xla='step' with {replicas} replicas must be resolved against the models first "
            "(steps.resolve_xla_mode(xla, strategy, run_config))."
        )
    if config.xla == config_lib.XLA_REPLICA_GRADIENTS:
        batch_norms = [layer.name for model in models for layer in _batch_norm_layers(model)]
        if batch_norms:
            raise ValueError(
                f"xla={config.xla!r} needs BN-free models; these have BatchNorm: "
                f"{batch_norms[:3]}. Use xla='auto'."
            )


def _set_autoclustering(enabled):
    # Process-wide, read when a function is traced: set before the first call of the loop.
    tf.config.optimizer.set_jit("autoclustering" if enabled else False)


def build_train_loop_fn(
    strategy,
    config,
    generator,
    discriminator,
    content_model,
    g_optimizer,
    d_optimizer,
    *,
    content_loss_fn=None,
    ema_generator=None,
    ema_decay=0.0,
    prepare_batch=None,
    step_counter=None,
):
    """The tf.function that runs `config.steps_per_loop` training steps.

    Args:
      strategy: the tf.distribute strategy the models and optimizers were built under.
      config: a trainer.config.StepConfig (its xla mode already resolved for `strategy`).
      generator: the SRResNet generator.
      discriminator: the SRGAN discriminator (None for pretrain).
      content_model: the frozen perceptual feature model (None for pretrain).
      g_optimizer: the generator's optimizer (from create_optimizer).
      d_optimizer: the discriminator's optimizer (None for pretrain).
      content_loss_fn: fn(content_model, hr, sr) -> per-example loss [B]; defaults to
        trainer.perceptual.content_loss with config.loss's criterion and layer weights.
      ema_generator: the generator's EMA copy (trainer.ema), updated after every step; None:
        no EMA.
      ema_decay: the EMA decay (with ema_generator).
      prepare_batch: fn(batch, step) -> (lr, hr[, hr_real]), run in each replica's context
        before the step (outside its XLA function): the on-device degradation
        (trainer.degrade_batches); `step` is the global step being run (int64). None: the
        iterator yields (lr, hr) batches ready for the step.
      step_counter: the int64 global-step variable (read once per call: the loop's first
        step); needed with prepare_batch.

    Returns:
      A tf.function(iterator) -> dict metric name -> float32 scalar: the mean over the loop's
      steps of the global-batch means (metric_names(config.phase)). It does not touch any step
      counter.
    """
    _check_xla_mode(config, strategy, (generator, discriminator))
    replica_gradients = config.xla == config_lib.XLA_REPLICA_GRADIENTS
    if config.phase == config_lib.PRETRAIN:
        make_step = _pretrain_replica_gradients_fn if replica_gradients else _pretrain_step_fn
        replica_step = make_step(config, generator, g_optimizer)
    else:
        if discriminator is None or content_model is None or d_optimizer is None:
            raise ValueError(
                "the gan phase needs a discriminator, a content model and d_optimizer."
            )
        if content_loss_fn is None:
            from trainer import perceptual  # noqa: PLC0415 (pretrain must not need it)

            content_loss_fn = functools.partial(
                perceptual.content_loss,
                criterion=config.loss.perceptual_criterion,
                layer_weights=[weight for _, weight in config.loss.perceptual_layers] or None,
            )
        make_step = _gan_replica_gradients_fn if replica_gradients else _gan_step_fn
        replica_step = make_step(
            config,
            generator,
            discriminator,
            content_model,
            content_loss_fn,
            g_optimizer,
            d_optimizer,
        )
    _set_autoclustering(config.xla == "auto")
    if config.xla == "step":
        replica_step = tf.function(replica_step, jit_compile=True)
    names = metric_names(config.phase)
    steps = config.steps_per_loop
    if prepare_batch is not None and step_counter is None:
        raise ValueError("prepare_batch needs the step_counter it derives its seeds from.")

    def run_step(batch, step):
        if prepare_batch is not None:
            batch = prepare_batch(batch, step)
        return replica_step(batch)

    @tf.function
    def train_loop(iterator):
        totals = {name: tf.constant(0.0) for name in names}
        first = step_counter.read_value() if step_counter is not None else tf.constant(0, tf.int64)
        for i in tf.range(steps, dtype=tf.int64):
            per_replica = strategy.run(run_step, args=(next(iterator), first + i))
            if ema_generator is not None:
                # Cross-replica context: the mirrored EMA variables get one update each.
                ema_lib.update(ema_generator, generator, ema_decay)
            # Each replica returns its share of the global mean: the SUM is the global mean.
            totals = {
                name: totals[name]
                + strategy.reduce(tf.distribute.ReduceOp.SUM, per_replica[name], axis=None)
                for name in names
            }
        return {name: totals[name] / steps for name in names}

    return train_loop
