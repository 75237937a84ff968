"""The training input of a run that may be a resumed one (for distribute_datasets_from_function)."""

from trainer import config as config_lib
from trainer import degrade_batches, input_pipeline

# Spreads the seeds of resumed runs apart (a prime: start steps never collide).
_RESUME_SEED_STRIDE = 7919


def input_fn(
    source: input_pipeline.DataSource,
    config: config_lib.RunConfig,
    start_step,
    degradation_seed=None,
):
    """The input of a run that starts at `start_step`: fn(input_context) -> dataset.

    TF 2.21 cannot checkpoint a tf.distribute iterator (DistributedIterator and the
    OwnedMultiDeviceIterator inside it are not Trackable, for every strategy), so a resumed run
    cannot restore the stream position. By default a seeded resumed stream is seeded from the
    seed and the start step: reproducible, and not a replay of the batches already seen.
    replay_input_on_resume instead skips the batches consumed so far, so a resumed run sees
    exactly the uninterrupted run's stream (the skipped batches are still decoded: costly late
    in a long run).

    Args:
      source: the dataset, opened once (input_pipeline.open_dataset).
      config: the run's RunConfig (its input, seed and replay_input_on_resume).
      start_step: the global step the run resumes from (0 for a fresh run).
      degradation_seed: with config.degradation enabled, the run seed of the degradations
        (degrade_batches.run_seed).

    Returns:
      fn(input_context) -> dataset of (lr, hr) batches; with a degradation, of HR batches in
      [0, 1] (degrade_on="device": the step degrades them) or of (lr, hr target, hr real)
      batches (degrade_on="input").
    """
    replay = config.replay_input_on_resume and config.seed is not None
    seed = config.seed
    if seed is not None and not replay:
        seed += _RESUME_SEED_STRIDE * start_step
    choice = config.degradation
    if choice.enabled:
        dataset_fn = input_pipeline.hr_train_dataset_fn(source, config.input, seed)
    else:
        dataset_fn = input_pipeline.train_dataset_fn(source, config.input, seed)

    def pipeline(context):
        dataset = dataset_fn(context)
        if replay and start_step:
            # A pipeline feeds its worker's local replicas one batch each per step.
            local_replicas = context.num_replicas_in_sync // context.num_input_pipelines
            dataset = dataset.skip(start_step * local_replicas)
        if choice.enabled and choice.degrade_on == "input":
            dataset = degrade_batches.degrade_dataset(
                dataset, choice, source.scale, degradation_seed, start_step, context
            )
        return dataset

    return pipeline
