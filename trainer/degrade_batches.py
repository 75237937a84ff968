"""The training batches when their LR is synthesised (--degradation) or their targets sharpened.

With --degradation=realesrgan the input pipeline yields HR patches in [0, 1]
(input_pipeline.make_hr_train_dataset) and Real-ESRGAN's second-order degradation
(trainer.degradations) makes each batch's LR, either

  device: in each replica's context at the start of the step (steps.build_train_loop_fn's
          prepare_batch), on the replica's device, as Real-ESRGAN does on its GPUs; or
  input:  in the tf.data pipeline, on the host, overlapped with the step by prefetching.

Both draw the seed of a batch from (--seed, the global step it is trained at, the replica that
trains it) through degradations.step_seed, so the two placements give the same batches, two
replicas never draw the same degradations, and a resumed run draws what the uninterrupted run
drew at the same step. The input pipeline knows which step and replica a batch goes to because
tf.distribute hands a pipeline's batches to its local replicas in turn: batch k of pipeline p
feeds replica p * local + k % local at step start + k // local (local = replicas per pipeline).

Either way the step receives (lr [0, 1], hr target [-1, 1], hr real [-1, 1]): the target is the
unsharp-masked HR with --usm_targets (the pixel and perceptual losses), the real HR is what the
discriminator sees (steps.unpack_batch). --usm_targets on stored pairs (no degradation) sharpens
the stored HR in the step.
"""

import random

import tensorflow as tf
from absl import logging

from trainer import config as config_lib
from trainer import degradations, value_range


def run_seed(seed):
    """The degradations' run seed: --seed, or a random one (logged) for an unseeded run."""
    if seed is not None:
        return int(seed)
    drawn = random.SystemRandom().randrange(2**31)
    logging.info("Degradation seed %d (no --seed: drawn for this run).", drawn)
    return drawn


def degradation_config(choice: config_lib.DegradationChoice, scale):
    """The pipeline's parameters: Real-ESRGAN x4plus's ranges at the dataset's scale."""
    return degradations.DegradationConfig(scale=scale, usm_target=choice.usm_targets)


def _degraded(hr, seed, step, replica, config):
    lr, target = degradations.degrade(hr, degradations.step_seed(seed, step, replica), config)
    return lr, value_range.hr_from_unit(target), value_range.hr_from_unit(hr)


def _sharpened(batch):
    lr, hr = batch
    target = degradations.usm_sharpen(value_range.unit_from_hr(hr))
    return lr, value_range.hr_from_unit(target), hr


def prepare_fn(choice: config_lib.DegradationChoice, scale, seed):
    """steps.build_train_loop_fn's prepare_batch for `choice`, or None (nothing to do there).

    Args:
      choice: the run's DegradationChoice.
      scale: the dataset's scale.
      seed: the run seed (run_seed).

    Returns:
      fn(batch, step) -> (lr, hr target, hr real), run in a replica's context; None when the
      batches arrive ready (no degradation and no sharpening, or degrade_on="input").
    """
    if not choice.prepares_batches:
        return None
    if not choice.enabled:
        return lambda batch, step: _sharpened(batch)
    if choice.degrade_on == "input":
        return None
    config = degradation_config(choice, scale)

    def prepare(hr, step):
        replica = tf.distribute.get_replica_context().replica_id_in_sync_group
        return _degraded(hr, seed, step, replica, config)

    return prepare


def degrade_dataset(hr_batches, choice, scale, seed, start_step, input_context):
    """The input placement: (lr, hr target, hr real) batches from a pipeline's HR batches.

    Args:
      hr_batches: the pipeline's dataset of HR batches in [0, 1] (make_hr_train_dataset).
      choice: the run's DegradationChoice (degrade_on="input").
      scale: the dataset's scale.
      seed: the run seed (run_seed).
      start_step: the global step of the pipeline's first batch (a resumed run's start).
      input_context: the pipeline's tf.distribute.InputContext (None: one pipeline, one replica).
    """
    context = input_context or tf.distribute.InputContext()
    local = context.num_replicas_in_sync // context.num_input_pipelines
    first_replica = context.input_pipeline_id * local
    config = degradation_config(choice, scale)

    def degrade(index, hr):
        step = start_step + index // local
        replica = first_replica + index % local
        return _degraded(hr, seed, step, replica, config)

    return (
        hr_batches.enumerate()
        .map(degrade, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
        .prefetch(tf.data.AUTOTUNE)
    )
