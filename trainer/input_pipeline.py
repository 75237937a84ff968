"""tf.data input pipeline: the TFRecord shards of data_prep.build_tfrecords -> (LR, HR) batches,
or HR patches alone for training on LR synthesised on the fly.

A process reads a dataset directory's manifest once (open_dataset) and hands the DataSource to
every stream it builds: training, each validation pass, image grids, evaluation.

Value ranges follow trainer.value_range: the training stream yields LR float32 in [0, 1] and HR
float32 in [-1, 1]; the HR-patch stream yields HR float32 in [0, 1] (the degradation model's
range); the validation stream yields the decoded uint8 pixels (its consumers convert).

Paired and HR-only datasets (the manifest's lr_kind, data_prep/schema.py):
  make_train_dataset     LR/HR pairs: paired datasets only; an HR-only one is refused with the
                         flag that reads it.
  make_hr_train_dataset  HR patches: HR-only and paired datasets (the stored LR is not even
                         decoded); the caller synthesises the LR (trainer.degradations).
  make_validation_dataset  LR/HR pairs from both: for HR-only data the LR is synthesised by
                         data_prep.images.downscale, the antialiased bicubic the Beam job stores
                         with --lr=bicubic, so validation PSNR means the same on both kinds.

Training streams (infinite), per input pipeline (one per host under tf.distribute):
  shard files (this pipeline's share) -> shuffled every epoch -> parallel interleaved reads ->
  parse + PNG decode (a record that fails is an error naming its shard, or skipped and counted)
  -> crops_per_image aligned random crops per decoded image + random flips / 90-degree rotations
  -> shuffle -> batch(per-replica batch, drop_remainder) -> uint8 to float ranges -> prefetch.
  The HR-patch stream is the same with HR crops alone: same sharding, seeds and determinism.

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
import posixpath

import numpy as np
import tensorflow as tf
from absl import logging

from data_prep import images as image_rules
from data_prep import schema
from trainer import config as config_lib
from trainer import pair_records, patches, value_range

AUTOTUNE = tf.data.AUTOTUNE
# Shards read at once per pipeline: enough parallel reads to hide file latency (GCS), few enough
# that a small dataset still mixes shards.
_MAX_PARALLEL_SHARDS = 8
# Whole decoded images to shuffle between epochs when cache_decoded_images is on.
_MAX_IMAGE_SHUFFLE = 10_000


@dataclasses.dataclass(frozen=True)
class DataSource:
    """A dataset directory as read once per process: its manifest and its shards' byte sizes.

    Attributes:
      data_dir: the directory (local or gs://).
      manifest: its data_prep.schema.Manifest.
      shard_bytes: shard file name -> size in bytes (-1 for GZIP shards, whose uncompressed
        size is unknown); read_shard checks an uncompressed shard was read to its end.
    """

    data_dir: str
    manifest: schema.Manifest
    shard_bytes: dict

    @property
    def scale(self):
        return self.manifest.scale

    @property
    def paired(self):
        """False for HR-only data (srgan-prepare --lr=none): no stored LR."""
        return self.manifest.paired

    def files(self, split):
        """(absolute shard paths, their byte sizes) of one split."""
        paths = schema.split_files(self.data_dir, self.manifest, split)  # raises on a bad split
        names = self.manifest.splits[split].files
        return paths, [self.shard_bytes[name] for name in names]

    def has_examples(self, split):
        info = self.manifest.splits.get(split)
        return bool(info and info.num_examples and info.files)


def open_dataset(data_dir) -> DataSource:
    """Reads a dataset directory's manifest, checks every shard exists and notes its size.

    The one read of a dataset per process: pass the DataSource down instead of the directory.

    Raises:
      FileNotFoundError: no manifest, or a shard it names is missing.
      ValueError: a schema version this code does not read.
    """
    manifest = schema.read_manifest(data_dir)
    names = [name for info in manifest.splits.values() for name in info.files]
    if manifest.compressed:
        sizes = {name: -1 for name in names}
    else:
        sizes = {name: tf.io.gfile.stat(posixpath.join(data_dir, name)).length for name in names}
    return DataSource(data_dir=data_dir, manifest=manifest, shard_bytes=sizes)


def check_split(source: DataSource, split, hr_patch_size=None):
    """Checks `split` can be read, with HR patches (or crops) of `hr_patch_size` if given.

    Raises:
      ValueError: unknown or empty split; patch size not positive, not divisible by the scale,
        or larger than the split's smallest image.
    """
    schema.split_files(source.data_dir, source.manifest, split)  # raises on an unknown split
    if not source.has_examples(split):
        raise ValueError(f"{source.data_dir}: split {split!r} is empty; nothing to read.")
    if hr_patch_size is None:
        return
    scale, info = source.scale, source.manifest.splits[split]
    if hr_patch_size <= 0 or hr_patch_size % scale:
        raise ValueError(
            f"HR patch size {hr_patch_size} must be a positive multiple of the "
            f"dataset's scale {scale} (from {source.data_dir})."
        )
    lr_patch = hr_patch_size // scale
    if lr_patch > info.min_lr_height or lr_patch > info.min_lr_width:
        raise ValueError(
            f"HR patch size {hr_patch_size} (LR {lr_patch}) is larger than the smallest image "
            f"of split {split!r} in {source.data_dir}: LR {info.min_lr_height}x"
            f"{info.min_lr_width} (HR {info.min_lr_height * scale}x{info.min_lr_width * scale})."
        )


def check_paired(source: DataSource):
    """Refuses HR-only data where stored LR/HR pairs are needed (make_train_dataset).

    Raises:
      ValueError: the dataset is HR-only; the message names the ways to train on it.
    """
    if source.paired:
        return
    raise ValueError(
        f"{source.data_dir} holds HR-only shards (manifest lr_kind {schema.LR_NONE!r}, written "
        "by srgan-prepare --lr=none): they store no LR to train pairs on. Train on it with "
        "--degradation=realesrgan (HR patches, LR synthesised while training), or rewrite it "
        "with srgan-prepare --lr=bicubic (or --lr_glob) for training on stored pairs."
    )


def _file_list(files, sizes):
    return tf.data.Dataset.from_tensor_slices((files, tf.constant(sizes, tf.int64)))


def _shard_records(files, sizes, compression, context, deterministic, seed=None, forever=True):
    """This pipeline's share of the records, as (shard, index in shard, serialized record).

    forever=True: repeats, with the file order reshuffled every epoch; else one pass in order.
    """
    num_pipelines, pipeline_id = context.num_input_pipelines, context.input_pipeline_id

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


def _decoded_images(source, config, context, deterministic, seed, corrupt_counter, with_lr=True):
    """Infinite stream of this pipeline's decoded (key, lr, hr) uint8 images ((key, hr) without
    with_lr)."""
    files, sizes = source.files(config.split)
    compression = schema.compression_type(source.manifest.compressed)
    records = _shard_records(
        files,
        sizes,
        compression,
        context,
        deterministic,
        seed,
        forever=not config.cache_decoded_images,
    )
    decode = pair_records.decoded_pairs if with_lr else pair_records.decoded_hr
    images = decode(records, source.scale, deterministic, config.skip_corrupt, corrupt_counter)
    if not config.cache_decoded_images:
        return images
    # Decoded once into memory; each epoch then reshuffles whole images (not just files).
    num_images = source.manifest.splits[config.split].num_examples
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


def _patch_stream(source, config, seed, input_context, corrupt_counter, with_lr, crop, convert):
    """The training streams' shared body: decoded images -> `crop` (image, [2] seed) -> patches
    -> shuffle -> per-replica batches -> `convert` -> prefetch.

    crop takes the decoded image tuple ((key, lr, hr) or (key, hr)) and a stateless seed and
    returns crops_per_image patches (a tuple of tensors or one tensor); convert maps a batch.
    """
    check_split(source, config.split, config.hr_patch_size)
    context = input_context or tf.distribute.InputContext()
    batch_size = context.get_per_replica_batch_size(config.global_batch_size)
    deterministic = seed is not None
    file_seed, crop_seed, patch_seed = _op_seeds(seed, context.input_pipeline_id)
    images = _decoded_images(
        source, config, context, deterministic, file_seed, corrupt_counter, with_lr
    )
    seeds = tf.data.Dataset.random(seed=crop_seed).batch(2)
    patches_ = (
        tf.data.Dataset.zip((images, seeds))
        .map(crop, num_parallel_calls=AUTOTUNE, deterministic=deterministic)
        .unbatch()
    )
    batches = patches_.shuffle(config.shuffle_buffer, seed=patch_seed).batch(
        batch_size, drop_remainder=True
    )
    batches = batches.map(convert, num_parallel_calls=AUTOTUNE, deterministic=deterministic)
    return batches.prefetch(AUTOTUNE).with_options(_options(deterministic))


def make_train_dataset(
    source: DataSource,
    config: config_lib.InputConfig,
    seed=None,
    input_context=None,
    corrupt_counter=None,
):
    """The infinite training stream of (lr, hr) batches for one input pipeline.

    Args:
      source: the dataset (open_dataset); a paired one (HR-only data: make_hr_train_dataset).
      config: the InputConfig.
      seed: None for a non-deterministic (fastest) stream; an int makes it reproducible.
      input_context: tf.distribute.InputContext, or None for a single pipeline and replica.
      corrupt_counter: optional int64 tf.Variable counting records skipped with skip_corrupt.

    Returns:
      tf.data.Dataset of (lr float32 [b, p, p, 3] in [0, 1], hr float32 [b, p*s, p*s, 3] in
      [-1, 1]), b the per-replica batch size, p = hr_patch_size // scale, s the scale.

    Raises:
      ValueError: an HR-only dataset (check_paired), or a split or patch size it cannot serve.
    """
    check_paired(source)
    scale, lr_patch = source.scale, config.hr_patch_size // source.scale

    def crops(image, crop_seed):
        _, lr, hr = image
        return patches.random_aligned_crops(
            lr, hr, scale, lr_patch, config.crops_per_image, crop_seed
        )

    def convert(lr, hr):
        return value_range.lr_from_uint8(lr), value_range.hr_from_uint8(hr)

    return _patch_stream(source, config, seed, input_context, corrupt_counter, True, crops, convert)


def make_hr_train_dataset(
    source: DataSource,
    config: config_lib.InputConfig,
    seed=None,
    input_context=None,
    corrupt_counter=None,
):
    """The infinite training stream of HR patch batches, for LR synthesised on the fly.

    Reads HR-only datasets (srgan-prepare --lr=none) and paired ones alike: a paired record's
    LR is neither parsed nor decoded. Patches are cut anywhere in the image (no LR grid to stay
    on), with the same random flips / 90-degree rotations, sharding, seeds and determinism as
    make_train_dataset. check_split holds both streams to the same sizes: hr_patch_size a
    multiple of the scale (the synthesised LR patch is hr_patch_size // scale) and at most the
    split's smallest HR side.

    Args: as make_train_dataset.

    Returns:
      tf.data.Dataset of hr float32 [b, P, P, 3] in [0, 1] (the degradation model's range:
      value_range.hr_from_unit turns them into HR targets), b the per-replica batch size,
      P = hr_patch_size.

    Raises:
      ValueError: a split or patch size the dataset cannot serve.
    """
    size = config.hr_patch_size

    def crops(image, crop_seed):
        _, hr = image
        return patches.random_crops(hr, size, config.crops_per_image, crop_seed)

    return _patch_stream(
        source,
        config,
        seed,
        input_context,
        corrupt_counter,
        False,
        crops,
        value_range.unit_from_uint8,
    )


def train_dataset_fn(source: DataSource, config: config_lib.InputConfig, seed=None):
    """fn(input_context) -> make_train_dataset, for strategy.distribute_datasets_from_function."""
    return lambda input_context: make_train_dataset(source, config, seed, input_context)


def hr_train_dataset_fn(source: DataSource, config: config_lib.InputConfig, seed=None):
    """fn(input_context) -> make_hr_train_dataset, for distribute_datasets_from_function."""
    return lambda input_context: make_hr_train_dataset(source, config, seed, input_context)


def bicubic_lr(hr, scale):
    """uint8 HR [H, W, 3] (sides multiples of scale) -> uint8 LR [H/scale, W/scale, 3]: the Beam
    job's own LR synthesis (data_prep.images.downscale, PIL's antialiased bicubic), so an HR-only
    dataset validates on exactly the pairs --lr=bicubic would have stored. A host op (PIL)."""
    lr = tf.numpy_function(
        lambda pixels: image_rules.downscale(pixels, scale), [hr], tf.uint8, stateful=False
    )
    return tf.ensure_shape(lr, [None, None, schema.CHANNELS])


def make_validation_dataset(
    source: DataSource, split=schema.VALIDATION, hr_crop_size=None, batch_size=1
):
    """Every example of `split` exactly once, in shard-file and record order, as decoded.

    HR-only data (srgan-prepare --lr=none) gets its LR here from data_prep.images.downscale,
    the antialiased bicubic (PIL) the Beam job stores with --lr=bicubic: for whole images the
    pairs are pixel for pixel those of a --lr=bicubic dataset, so validation PSNR means the same
    on both kinds. (For tiled data, --hr_crop_size, each tile is downscaled on its own: LR pixels
    within about 2 of a tile's edge differ slightly from a tile cut from the downscaled image.)

    Args:
      source: the dataset (open_dataset).
      split: the split to read.
      hr_crop_size: None for full images (then batch_size must be 1, sizes differ); else the
        side of an aligned centre crop (a multiple of the scale), which makes examples batchable.
      batch_size: examples per element; the last batch may be smaller (nothing is dropped).

    Returns:
      Finite tf.data.Dataset of {"key": string [b], "lr": uint8 [b, h, w, 3],
      "hr": uint8 [b, h*s, w*s, 3]}: the stored pixels; consumers convert once
      (value_range.generate_uint8 runs a generator on them).
    """
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}.")
    if hr_crop_size is None and batch_size != 1:
        raise ValueError(
            f"Full validation images differ in size: batch_size must be 1 without "
            f"hr_crop_size (got {batch_size})."
        )
    check_split(source, split, hr_crop_size)
    scale = source.scale
    compression = schema.compression_type(source.manifest.compressed)
    records = _file_list(*source.files(split)).flat_map(
        lambda shard, shard_bytes: pair_records.read_shard(shard, shard_bytes, compression)
    )
    if source.paired:
        pairs = pair_records.decoded_pairs(records, scale, deterministic=True)
    else:
        pairs = pair_records.decoded_hr(records, scale, deterministic=True).map(
            lambda key, hr: (key, bicubic_lr(hr, scale), hr),
            num_parallel_calls=AUTOTUNE,
            deterministic=True,
        )

    def to_example(key, lr, hr):
        if hr_crop_size is not None:
            lr, hr = patches.centre_crop(lr, hr, scale, hr_crop_size)
        return {"key": key, "lr": lr, "hr": hr}

    examples = pairs.map(to_example, num_parallel_calls=AUTOTUNE, deterministic=True)
    return examples.batch(batch_size).prefetch(AUTOTUNE).with_options(_options(True))
