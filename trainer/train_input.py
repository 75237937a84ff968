"""The training input of a run that may be a resumed one (for distribute_datasets_from_function)."""

from trainer import input_pipeline


def input_fn(config, start_step):
    """The input of a run that starts at `start_step`: fn(input_context) -> dataset.

    TF 2.21 cannot checkpoint a tf.distribute iterator (DistributedIterator and the
    OwnedMultiDeviceIterator inside it are not Trackable, for every strategy), so a resumed run
    cannot restore the stream position. By default a seeded resumed stream is seeded from the
    seed and the start step: reproducible, and not a replay of the batches already seen.
    replay_input_on_resume instead skips the batches consumed so far, so a resumed run sees
    exactly the uninterrupted run's stream (the skipped batches are still decoded: costly late
    in a long run).

    Args:
      config: a trainer.loop.TrainConfig.
      start_step: the global step the run resumes from (0 for a fresh run).
    """
    replay = config.replay_input_on_resume and config.seed is not None
    seed = config.seed
    if seed is not None and not replay:
        seed += 7919 * start_step
    optional = {
        k: getattr(config, k)
        for k in ("crops_per_image", "shuffle_buffer")
        if getattr(config, k) is not None
    }
    dataset_fn = input_pipeline.train_dataset_fn(
        input_pipeline.TrainInputConfig(
            data_dir=config.data_dir,
            hr_patch_size=config.hr_patch_size,
            global_batch_size=config.global_batch_size,
            seed=seed,
            **optional,
        )
    )
    if not replay or start_step == 0:
        return dataset_fn

    def replayed(context):
        # A pipeline feeds its worker's local replicas one batch each per step.
        local_replicas = context.num_replicas_in_sync // context.num_input_pipelines
        return dataset_fn(context).skip(start_step * local_replicas)

    return replayed
