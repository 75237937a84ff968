"""tf.data input pipeline: the TFRecord shards of data_prep.build_tfrecords -> (LR, HR) batches.

Value ranges follow trainer.value_range: LR float32 in [0, 1], HR float32 in [-1, 1].

Training stream (infinite), per input pipeline (one per host under tf.distribute):
  shard files (this pipeline's share) -> shuffled every epoch -> parallel interleaved reads ->
  parse + PNG decode (a record that fails is an error naming its shard, or skipped and counted)
  -> crops_per_image aligned random crops per decoded image + random flips / 90-degree rotations
  -> shuffle -> batch(per-replica batch, drop_remainder) -> uint8 to float ranges -> prefetch.

Decoding the PNGs costs far more than cropping them (about 20 CPU ms for a 1024x768 x4 pair, 8-11
for a 480-px tile, against ~2 for 16 crops with their flips), so each decode serves
crops_per_image patches and the shuffle buffer mixes patches of many images into each batch.
Sub-image shards (data_prep --hr_crop_size) make each decode cheaper; cache_decoded_images
removes decoding after the first epoch for splits that fit in RAM. Record decoding and the
handling of corrupt records live in trainer/pair_records.py, crops in trainer/patches.py.

Distribution: shard files are dealt to pipelines by input_pipeline_id, so MultiWorkerMirrored
hosts read disjoint files. With fewer files than pipelines every pipeline reads all files in a
fixed order and keeps every num_input_pipelines-th record (element sharding): still disjoint,
but each host reads (not decodes) all the data.
"""

import dataclasses

import numpy as np
import tensorflow as tf
from absl import logging

from data_prep import schema
from trainer import pair_records, patches, value_range

AUTOTUNE = tf.data.AUTOTUNE
# Shards read at once per pipeline: enough parallel reads to hide file latency (GCS), few enough
# that a small dataset still mixes shards.
_MAX_PARALLEL_SHARDS = 8
# Whole decoded images to shuffle between epochs when cache_decoded_images is on.
_MAX_IMAGE_SHUFFLE = 10_000


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
      cache_decoded_images: decode each image once and keep it in memory (uint8 LR + HR,
        about (1 + scale^2) * 3 bytes per LR pixel: ~125 MB for 50 1024x768 x4 pairs). Removes
        PNG decoding after the first epoch; only for splits that fit in host RAM.
    """

    data_dir: str
    hr_patch_size: int = 96
    global_batch_size: int = 16
    crops_per_image: int = 16
    shuffle_buffer: int = 1024
    seed: int | None = None
    skip_corrupt: bool = False
    split: str = schema.TRAIN
    cache_decoded_images: bool = False


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
        raise ValueError(
            f"HR patch size {hr_patch_size} must be a positive multiple of the "
            f"dataset's scale {scale} (from {data_dir})."
        )
    if split is None:
        return
    info = manifest.splits[split]
    lr_patch = hr_patch_size // scale
    if lr_patch > info.min_lr_height or lr_patch > info.min_lr_width:
        raise ValueError(
            f"HR patch size {hr_patch_size} (LR {lr_patch}) is larger than the smallest image "
            f"of split {split!r} in {data_dir}: LR {info.min_lr_height}x{info.min_lr_width} "
            f"(HR {info.min_lr_height * scale}x{info.min_lr_width * scale})."
        )


def _shard_sizes(files, compression):
    """Byte size of each shard: read_shard checks uncompressed shards were read to the end."""
    if compression:
        return [-1] * len(files)
    return [tf.io.gfile.stat(path).length for path in files]


def _file_list(files, sizes):
    return tf.data.Dataset.from_tensor_slices((files, tf.constant(sizes, tf.int64)))


def _shard_records(files, compression, context, deterministic, seed=None, forever=True):
    """This pipeline's share of the records, as (shard, index in shard, serialized record).

    forever=True: repeats, with the file order reshuffled every epoch; else one pass in order.
    """
    num_pipelines, pipeline_id = context.num_input_pipelines, context.input_pipeline_id
    sizes = _shard_sizes(files, compression)

    def read(shard, shard_bytes):
        return pair_records.read_shard(shard, shard_bytes, compression)

    if len(files) < num_pipelines:
        logging.warning(
            "%d shard files for %d input pipelines: every pipeline reads all files and "
            "keeps every %d-th record (more shards would avoid the extra reads).",
            len(files),
            num_pipelines,
            num_pipelines,
        )
        records = _file_list(files, sizes).flat_map(read).shard(num_pipelines, pipeline_id)
        return records.repeat() if forever else records
    files, sizes = files[pipeline_id::num_pipelines], sizes[pipeline_id::num_pipelines]
    file_list = _file_list(files, sizes)
    if forever:
        file_list = file_list.shuffle(len(files), seed=seed, reshuffle_each_iteration=True)
        file_list = file_list.repeat()
    return file_list.interleave(
        read,
        cycle_length=min(len(files), _MAX_PARALLEL_SHARDS),
        block_length=1,
        num_parallel_calls=AUTOTUNE,
        deterministic=deterministic,
    )


def _decoded_images(config, manifest, context, seed, corrupt_counter):
    """Infinite stream of this pipeline's decoded (key, lr, hr) uint8 images."""
    deterministic = config.seed is not None
    files = schema.split_files(config.data_dir, manifest, config.split)
    compression = schema.compression_type(manifest.compressed)
    records = _shard_records(
        files, compression, context, deterministic, seed, forever=not config.cache_decoded_images
    )
    images = pair_records.decoded_pairs(
        records, manifest.scale, deterministic, config.skip_corrupt, corrupt_counter
    )
    if not config.cache_decoded_images:
        return images
    # Decoded once into memory; each epoch then reshuffles whole images (not just files).
    num_images = manifest.splits[config.split].num_examples
    return (
        images.cache()
        .shuffle(min(num_images, _MAX_IMAGE_SHUFFLE), seed=seed, reshuffle_each_iteration=True)
        .repeat()
    )


def _op_seeds(seed, pipeline_id):
    """Distinct seeds for the file/image shuffle, the crops and the pair shuffle of one pipeline
    (Nones without a seed): equal op seeds would draw equal random sequences."""
    if seed is None:
        return None, None, None
    return tuple(int(x) for x in np.random.SeedSequence([seed, pipeline_id]).generate_state(3))


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
    for name in ("global_batch_size", "crops_per_image", "shuffle_buffer"):
        if getattr(config, name) < 1:
            raise ValueError(f"TrainInputConfig.{name} must be >= 1, got {getattr(config, name)}.")
    context = input_context or tf.distribute.InputContext()
    manifest = open_dataset(config.data_dir, config.hr_patch_size, config.split)
    batch_size = context.get_per_replica_batch_size(config.global_batch_size)
    scale, lr_patch = manifest.scale, config.hr_patch_size // manifest.scale
    deterministic = config.seed is not None
    file_seed, crop_seed, pair_seed = _op_seeds(config.seed, context.input_pipeline_id)
    images = _decoded_images(config, manifest, context, file_seed, corrupt_counter)
    seeds = tf.data.Dataset.random(seed=crop_seed).batch(2)

    def crops(image, crop_seed):
        _, lr, hr = image
        return patches.random_aligned_crops(
            lr, hr, scale, lr_patch, config.crops_per_image, crop_seed
        )

    pairs = (
        tf.data.Dataset.zip((images, seeds))
        .map(crops, num_parallel_calls=AUTOTUNE, deterministic=deterministic)
        .unbatch()
    )
    batches = pairs.shuffle(config.shuffle_buffer, seed=pair_seed).batch(
        batch_size, drop_remainder=True
    )
    batches = batches.map(
        lambda lr, hr: (value_range.lr_from_uint8(lr), value_range.hr_from_uint8(hr)),
        num_parallel_calls=AUTOTUNE,
        deterministic=deterministic,
    )
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
        raise ValueError(
            f"Full validation images differ in size: batch_size must be 1 without "
            f"hr_crop_size (got {batch_size})."
        )
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}.")
    manifest = open_dataset(data_dir, hr_crop_size, split)
    scale = manifest.scale
    compression = schema.compression_type(manifest.compressed)
    files = schema.split_files(data_dir, manifest, split)
    records = _file_list(files, _shard_sizes(files, compression)).flat_map(
        lambda shard, shard_bytes: pair_records.read_shard(shard, shard_bytes, compression)
    )
    pairs = pair_records.decoded_pairs(records, scale, deterministic=True)

    def to_example(key, lr, hr):
        if hr_crop_size is not None:
            lr, hr = patches.centre_crop(lr, hr, scale, hr_crop_size)
        return {
            "key": key,
            "lr": value_range.lr_from_uint8(lr),
            "hr": value_range.hr_from_uint8(hr),
        }

    examples = pairs.map(to_example, num_parallel_calls=AUTOTUNE, deterministic=True)
    return examples.batch(batch_size).prefetch(AUTOTUNE).with_options(_options(True))
