"""The dataset format: one module that both the Beam writer and the tf.data reader import.

A dataset directory written by `data_prep.build_tfrecords` holds:

  train-00000-of-000NN.tfrecord[.gz]       tf.train.Example records, one LR/HR pair each
  validation-00000-of-000NN.tfrecord[.gz]
  rejected-00000-of-000NN.jsonl            dead letters: {"path", "key", "reason"} per line
                                           (exact duplicates: reason "duplicate_of: <kept path>")
  manifest.json                            written last; a directory without it is incomplete

Each Example (SCHEMA_VERSION 1) has these features:

  key            bytes  the pair's key, derived from the source file name (plus a tile suffix)
  scale          int64  HR side / LR side, one of SCALES (see "Why `scale` is per record")
  lr/encoded     bytes  PNG, 8-bit RGB
  lr/height      int64
  lr/width       int64
  lr/channels    int64  always 3
  hr/encoded     bytes  PNG, 8-bit RGB, exactly scale x the LR size
  hr/height      int64
  hr/width       int64
  hr/channels    int64  always 3

The feature table FEATURES below is the single source: `to_example` (writer) and
`parse_example` (reader) are both built from it.

Why `scale` is per record although no reader parses it: readers take the scale from the
manifest (one value per dataset, read once, compared with the model's scale before any record
is read), which is the one place to check it. The per-record copy keeps each Example
self-describing - a shard copied out of its directory or inspected on its own (e.g. with
`parse_example`) still says what it was written for - and dropping it would change
SCHEMA_VERSION and make every dataset written so far unreadable.
"""

import dataclasses
import json
import posixpath

SCHEMA_VERSION = 1
# The upscale factors every stage accepts (data prep, generator, export, evaluation): declared once.
SCALES = (2, 3, 4, 8)
MANIFEST_FILENAME = "manifest.json"
TRAIN = "train"
VALIDATION = "validation"
SPLITS = (TRAIN, VALIDATION)
REJECTED_PREFIX = "rejected"
CHANNELS = 3

# name -> dtype ("bytes" or "int64"); the whole record schema.
FEATURES = {
    "key": "bytes",
    "scale": "int64",
    "lr/encoded": "bytes",
    "lr/height": "int64",
    "lr/width": "int64",
    "lr/channels": "int64",
    "hr/encoded": "bytes",
    "hr/height": "int64",
    "hr/width": "int64",
    "hr/channels": "int64",
}


def _tf():
    """TensorFlow, imported on first use: Beam workers that only write records (through
    data_prep.example_codec) then skip TF's multi-second import."""
    import tensorflow as tf

    return tf


@dataclasses.dataclass(frozen=True)
class PairRecord:
    """One LR/HR pair ready to be serialised. Images are PNG bytes of 8-bit RGB."""

    key: str
    scale: int
    lr_png: bytes
    lr_height: int
    lr_width: int
    hr_png: bytes
    hr_height: int
    hr_width: int

    def feature_values(self):
        """Values for each name in FEATURES."""
        return {
            "key": self.key.encode("utf-8"),
            "scale": self.scale,
            "lr/encoded": self.lr_png,
            "lr/height": self.lr_height,
            "lr/width": self.lr_width,
            "lr/channels": CHANNELS,
            "hr/encoded": self.hr_png,
            "hr/height": self.hr_height,
            "hr/width": self.hr_width,
            "hr/channels": CHANNELS,
        }


def _feature(dtype, value):
    tf = _tf()
    if dtype == "bytes":
        return tf.train.Feature(bytes_list=tf.train.BytesList(value=[value]))
    return tf.train.Feature(int64_list=tf.train.Int64List(value=[value]))


def to_example(record: PairRecord):
    """Builds the tf.train.Example for one pair (returns a tf.train.Example)."""
    tf = _tf()
    values = record.feature_values()
    features = {name: _feature(dtype, values[name]) for name, dtype in FEATURES.items()}
    return tf.train.Example(features=tf.train.Features(feature=features))


def feature_spec():
    """The `tf.io.parse_example` spec, derived from FEATURES."""
    tf = _tf()
    dtypes = {"bytes": tf.string, "int64": tf.int64}
    return {name: tf.io.FixedLenFeature([], dtypes[dtype]) for name, dtype in FEATURES.items()}


def parse_example(serialized):
    """Parses one (scalar) or a batch (vector) of serialised Examples into a feature dict."""
    tf = _tf()
    if serialized.shape.rank == 0:
        return tf.io.parse_single_example(serialized, feature_spec())
    return tf.io.parse_example(serialized, feature_spec())


def shard_name(split, index, num_shards, compressed=False):
    """File name of one shard, relative to the dataset directory."""
    suffix = ".tfrecord.gz" if compressed else ".tfrecord"
    return f"{split}-{index:05d}-of-{num_shards:05d}{suffix}"


def compression_type(compressed):
    """The `compression_type` argument for TFRecordDataset / TFRecordWriter."""
    return "GZIP" if compressed else ""


@dataclasses.dataclass(frozen=True)
class SplitInfo:
    """What the manifest says about one split.

    min_lr_height / min_lr_width are the smallest LR sides in the split (0 when empty):
    a reader uses them to refuse a patch size the data cannot serve.
    """

    num_examples: int
    files: tuple
    min_lr_height: int = 0
    min_lr_width: int = 0


@dataclasses.dataclass(frozen=True)
class Manifest:
    """manifest.json: the record of a complete dataset directory (written last).

    num_inputs == sum of the splits' num_examples + num_rejected; num_duplicates (exact
    duplicates dropped, each a dead letter) is part of num_rejected.
    """

    scale: int
    compressed: bool
    num_inputs: int
    num_rejected: int
    splits: dict  # split name -> SplitInfo
    rejected_files: tuple = ()
    num_duplicates: int = 0
    args: dict = dataclasses.field(default_factory=dict)
    schema_version: int = SCHEMA_VERSION

    def to_json(self):
        data = dataclasses.asdict(self)
        data["compression"] = compression_type(self.compressed) or None
        return json.dumps(data, indent=2, sort_keys=True)

    @classmethod
    def from_json(cls, text):
        data = json.loads(text)
        data.pop("compression", None)
        data["splits"] = {
            name: SplitInfo(**{**info, "files": tuple(info["files"])})
            for name, info in data["splits"].items()
        }
        data["rejected_files"] = tuple(data.get("rejected_files", ()))
        return cls(**data)


def manifest_path(data_dir):
    return posixpath.join(data_dir, MANIFEST_FILENAME)


def read_manifest(data_dir) -> Manifest:
    """Reads and checks a dataset directory's manifest (local path or gs:// via tf.io.gfile).

    Raises:
      FileNotFoundError: no manifest (the directory is incomplete or not a dataset), or a shard
        the manifest names is missing.
      ValueError: the schema version is not one this code reads.
    """
    tf = _tf()
    path = manifest_path(data_dir)
    if not tf.io.gfile.exists(path):
        raise FileNotFoundError(
            f"{data_dir} has no {MANIFEST_FILENAME}: not a complete data_prep output "
            "(the job writes the manifest last, so a crashed job leaves none)."
        )
    with tf.io.gfile.GFile(path, "r") as f:
        manifest = Manifest.from_json(f.read())
    if manifest.schema_version != SCHEMA_VERSION:
        raise ValueError(
            f"{path}: schema version {manifest.schema_version}, "
            f"this code reads version {SCHEMA_VERSION}."
        )
    for split in manifest.splits.values():
        for name in split.files:
            if not tf.io.gfile.exists(posixpath.join(data_dir, name)):
                raise FileNotFoundError(
                    f"{path} names shard {name}, which is missing from {data_dir}."
                )
    return manifest


def split_files(data_dir, manifest, split):
    """Absolute shard paths of one split."""
    if split not in manifest.splits:
        raise ValueError(f"{data_dir} has no split {split!r}; it has {sorted(manifest.splits)}.")
    return [posixpath.join(data_dir, name) for name in manifest.splits[split].files]
