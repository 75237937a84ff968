"""tf.data input pipeline: the TFRecord shards of data_prep.build_tfrecords -> (LR, HR) batches.

Value ranges follow trainer.value_range: LR float32 in [0, 1], HR float32 in [-1, 1].

Training stream (infinite), per input pipeline (one per host under tf.distribute):
  shard files (this pipeline's share) -> shuffled every epoch -> parallel interleaved reads ->
  parse + PNG decode (a record that fails is an error naming its shard, or skipped and counted)
  -> crops_per_image aligned random crops per decoded image + random flips / 90-degree rotations
  -> shuffle -> batch(per-replica batch, drop_remainder) -> uint8 to float ranges -> prefetch.

Decoding a PNG costs far more than cropping it (about 15 ms for a 1024x768 HR image against
well under 1 ms for 16 crops), so each decode serves crops_per_image patches; the shuffle buffer
mixes patches of many images into each batch. Sub-image shards (data_prep --hr_crop_size) make
each decode cheaper still.

Distribution: shard files are dealt to pipelines by input_pipeline_id, so MultiWorkerMirrored
hosts read disjoint files. With fewer files than pipelines every pipeline reads all files in a
fixed order and keeps every num_input_pipelines-th record (element sharding): still disjoint,
but each host reads (not decodes) all the data.
"""

import dataclasses
import sys

import tensorflow as tf

from data_prep import schema
from trainer import patches, value_range

AUTOTUNE = tf.data.AUTOTUNE
# Shards read at once per pipeline: enough parallel reads to hide file latency (GCS), few enough
# that a small dataset still mixes shards.
_MAX_PARALLEL_SHARDS = 8


@dataclasses.dataclass(frozen=True)
class TrainInputConfig:
    """The training stream.

    Attributes:
      data_dir: dataset directory (with manifest.json), local or gs://.
      hr_patch_size: HR patch side; the LR patch side is hr_patch_size // scale.
      global_batch_size: pairs per step over all replicas.
      crops_per_image: random patches taken from each decoded image.
      shuffle_buffer: patch pairs in the shuffle buffer (uint8, ~29 KB each at HR 96).
      seed: None for a non-deterministic (fastest) stream; an int makes it reproducible.
      skip_corrupt: skip records that do not decode (each one logged and counted) instead of
        failing with an error that names the shard.
      split: the manifest split to read.
    """

    data_dir: str
    hr_patch_size: int = 96
    global_batch_size: int = 16
    crops_per_image: int = 16
    shuffle_buffer: int = 1024
    seed: int | None = None
    skip_corrupt: bool = False
    split: str = schema.TRAIN


def open_dataset(data_dir, hr_patch_size=None, split=None) -> schema.Manifest:
    """Reads a dataset directory's manifest and checks it can serve the request.

    Args:
      data_dir: dataset directory.
      hr_patch_size: if given, the HR patch (or crop) side that will be taken from `split`.
      split: if given, the split that will be read (must exist and be non-empty).

    Returns:
      The Manifest.

    Raises:
      FileNotFoundError: no manifest, or a shard it names is missing.
      ValueError: unknown or empty split; patch size not positive, not divisible by the scale,
        or larger than the split's smallest image.
    """
    manifest = schema.read_manifest(data_dir)
    if split is not None:
        schema.split_files(data_dir, manifest, split)  # raises on an unknown split
        info = manifest.splits[split]
        if info.num_examples == 0 or not info.files:
            raise ValueError(f"{data_dir}: split {split!r} is empty; nothing to read.")
    if hr_patch_size is not None:
        _check_patch_size(data_dir, manifest, hr_patch_size, split)
    return manifest


def _check_patch_size(data_dir, manifest, hr_patch_size, split):
    scale = manifest.scale
    if hr_patch_size <= 0 or hr_patch_size % scale:
        raise ValueError(f"HR patch size {hr_patch_size} must be a positive multiple of the "
                         f"dataset's scale {scale} (from {data_dir}).")
    if split is None:
        return
    info = manifest.splits[split]
    lr_patch = hr_patch_size // scale
    if lr_patch > info.min_lr_height or lr_patch > info.min_lr_width:
        raise ValueError(
            f"HR patch size {hr_patch_size} (LR {lr_patch}) is larger than the smallest image "
            f"of split {split!r} in {data_dir}: LR {info.min_lr_height}x{info.min_lr_width} "
            f"(HR {info.min_lr_height * scale}x{info.min_lr_width * scale}).")


def _decode_pair(serialized, scale):
    """Serialized Example -> (key, lr uint8 [h, w, 3], hr uint8 [h*scale, w*scale, 3])."""
    features = schema.parse_example(serialized)
    lr = tf.io.decode_png(features["lr/encoded"], channels=schema.CHANNELS)
    hr = tf.io.decode_png(features["hr/encoded"], channels=schema.CHANNELS)
    check = tf.debugging.assert_equal(tf.shape(hr)[:2], tf.shape(lr)[:2] * scale,
                                      message="HR size is not scale x LR size")
    with tf.control_dependencies([check]):
        return features["key"], tf.identity(lr), tf.identity(hr)


def _placeholder_pair():
    empty = tf.zeros([0, 0, schema.CHANNELS], tf.uint8)
    return tf.constant(False), tf.constant(""), empty, empty


def _decode_or_flag(shard, index, serialized, scale):
    """A one-element dataset: (ok, key, lr, hr) with ok=False if the record does not decode.

    Errors cannot be caught inside a map function, but a one-record dataset with ignore_errors
    followed by a placeholder turns a failure into data, so the caller can name the shard.
    """
    decoded = tf.data.Dataset.from_tensors(serialized).map(
        lambda s: (tf.constant(True),) + _decode_pair(s, scale)).ignore_errors()
    failed = tf.data.Dataset.from_tensors(_placeholder_pair())
    return decoded.concatenate(failed).take(1).map(
        lambda ok, key, lr, hr: (shard, index, ok, key, lr, hr))


def _read_shard(shard, compression):
    """(shard name, record index in shard, serialized record) for every record of one shard."""
    records = tf.data.TFRecordDataset(shard, compression_type=compression)
    return records.enumerate().map(lambda index, record: (shard, index, record))


def _fail_corrupt(shard, index, ok, key, lr, hr):
    check = tf.debugging.Assert(ok, [
        "Corrupt record (undecodable Example or PNG, or HR not scale x LR) at index", index,
        "of shard", shard, "; rerun data_prep or set skip_corrupt to skip such records."])
    with tf.control_dependencies([check]):
        return tf.identity(key), tf.identity(lr), tf.identity(hr)


def _report_skip(counter):
    def report(shard, index, ok, key, lr, hr):
        def log_and_count():
            tf.print("input_pipeline: skipping corrupt record", index, "of shard", shard,
                     output_stream=sys.stderr)
            if counter is not None:
                counter.assign_add(1)
            return tf.constant(False)
        return tf.cond(ok, lambda: tf.constant(True), log_and_count)
    return report


def decoded_pairs(records, scale, deterministic, skip_corrupt=False, corrupt_counter=None):
    """(shard, index, serialized) records -> (key, lr uint8, hr uint8), decoded in parallel.

    Args:
      records: dataset of (shard name, index in shard, serialized Example).
      scale: the dataset's scale.
      deterministic: keep the input order.
      skip_corrupt: drop records that fail (logged to stderr, counted) instead of raising.
      corrupt_counter: optional int64 tf.Variable incremented per skipped record.
    """
    flagged = records.interleave(
        lambda shard, index, record: _decode_or_flag(shard, index, record, scale),
        cycle_length=AUTOTUNE, num_parallel_calls=AUTOTUNE, deterministic=deterministic)
    if skip_corrupt:
        flagged = flagged.filter(_report_skip(corrupt_counter))
        return flagged.map(lambda shard, index, ok, key, lr, hr: (key, lr, hr))
    return flagged.map(_fail_corrupt)


def _shard_records(files, compression, context, seed, deterministic):
    """This pipeline's records, file order reshuffled every epoch (repeats forever)."""
    num_pipelines, pipeline_id = context.num_input_pipelines, context.input_pipeline_id
    if len(files) < num_pipelines:
        records = tf.data.Dataset.from_tensor_slices(files).flat_map(
            lambda shard: _read_shard(shard, compression))
        return records.shard(num_pipelines, pipeline_id).repeat()
    files = files[pipeline_id::num_pipelines]
    file_list = tf.data.Dataset.from_tensor_slices(files).shuffle(
        len(files), seed=seed, reshuffle_each_iteration=True).repeat()
    return file_list.interleave(
        lambda shard: _read_shard(shard, compression),
        cycle_length=min(len(files), _MAX_PARALLEL_SHARDS), block_length=1,
        num_parallel_calls=AUTOTUNE, deterministic=deterministic)


def _options(deterministic):
    options = tf.data.Options()
    options.deterministic = deterministic
    options.autotune.enabled = True
    # One thread per op inside each map; parallelism comes from num_parallel_calls across
    # elements, which scales better for many small images than splitting one op.
    options.threading.max_intra_op_parallelism = 1
    options.experimental_optimization.map_parallelization = True
    # Sharding is done here by input_pipeline_id; tf.distribute must not shard again.
    options.experimental_distribute.auto_shard_policy = tf.data.experimental.AutoShardPolicy.OFF
    return options


def make_train_dataset(config: TrainInputConfig, input_context=None, corrupt_counter=None):
    """The infinite training stream of (lr, hr) batches for one input pipeline.

    Args:
      config: the TrainInputConfig.
      input_context: tf.distribute.InputContext, or None for a single pipeline and replica.
      corrupt_counter: optional int64 tf.Variable counting records skipped with skip_corrupt.

    Returns:
      tf.data.Dataset of (lr float32 [b, p, p, 3] in [0, 1], hr float32 [b, p*s, p*s, 3] in
      [-1, 1]), b the per-replica batch size, p = hr_patch_size // scale, s the scale.
    """
    context = input_context or tf.distribute.InputContext()
    manifest = open_dataset(config.data_dir, config.hr_patch_size, config.split)
    batch_size = context.get_per_replica_batch_size(config.global_batch_size)
    scale, lr_patch = manifest.scale, config.hr_patch_size // manifest.scale
    deterministic = config.seed is not None
    seed = None if config.seed is None else config.seed + context.input_pipeline_id
    files = schema.split_files(config.data_dir, manifest, config.split)
    compression = schema.compression_type(manifest.compressed)

    records = _shard_records(files, compression, context, seed, deterministic)
    images = decoded_pairs(records, scale, deterministic, config.skip_corrupt, corrupt_counter)
    seeds = tf.data.Dataset.random(seed=seed).batch(2)

    def crops(image, crop_seed):
        _, lr, hr = image
        return patches.random_aligned_crops(lr, hr, scale, lr_patch, config.crops_per_image,
                                            crop_seed)

    pairs = tf.data.Dataset.zip((images, seeds)).map(
        crops, num_parallel_calls=AUTOTUNE, deterministic=deterministic).unbatch()
    batches = pairs.shuffle(config.shuffle_buffer, seed=seed).batch(batch_size,
                                                                     drop_remainder=True)
    batches = batches.map(lambda lr, hr: (value_range.lr_from_uint8(lr),
                                          value_range.hr_from_uint8(hr)),
                          num_parallel_calls=AUTOTUNE, deterministic=deterministic)
    return batches.prefetch(AUTOTUNE).with_options(_options(deterministic))


def train_dataset_fn(config: TrainInputConfig, corrupt_counter=None):
    """fn(input_context) -> make_train_dataset, for strategy.distribute_datasets_from_function."""
    return lambda input_context: make_train_dataset(config, input_context, corrupt_counter)


def make_validation_dataset(data_dir, split=schema.VALIDATION, hr_crop_size=None, batch_size=1):
    """Every example of `split` exactly once, in shard-file and record order.

    Args:
      data_dir: dataset directory.
      split: the split to read.
      hr_crop_size: None for full images (then batch_size must be 1, sizes differ); else the
        side of an aligned centre crop (a multiple of the scale), which makes examples batchable.
      batch_size: examples per element; the last batch may be smaller (nothing is dropped).

    Returns:
      Finite tf.data.Dataset of {"key": string [b], "lr": float32 [b, h, w, 3] in [0, 1],
      "hr": float32 [b, h*s, w*s, 3] in [-1, 1]}.
    """
    if hr_crop_size is None and batch_size != 1:
        raise ValueError(f"Full validation images differ in size: batch_size must be 1 without "
                         f"hr_crop_size (got {batch_size}).")
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}.")
    manifest = open_dataset(data_dir, hr_crop_size, split)
    scale = manifest.scale
    compression = schema.compression_type(manifest.compressed)
    files = schema.split_files(data_dir, manifest, split)
    records = tf.data.Dataset.from_tensor_slices(files).flat_map(
        lambda shard: _read_shard(shard, compression))
    pairs = decoded_pairs(records, scale, deterministic=True)

    def to_example(key, lr, hr):
        if hr_crop_size is not None:
            lr, hr = patches.centre_crop(lr, hr, scale, hr_crop_size)
        return {"key": key, "lr": value_range.lr_from_uint8(lr),
                "hr": value_range.hr_from_uint8(hr)}

    examples = pairs.map(to_example, num_parallel_calls=AUTOTUNE, deterministic=True)
    return examples.batch(batch_size).prefetch(AUTOTUNE).with_options(_options(True))
