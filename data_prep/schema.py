"""The dataset format: one module that both the Beam writer and the tf.data reader import.

A dataset directory written by `data_prep.build_tfrecords` holds:

  train-00000-of-000NN.tfrecord[.gz]       tf.train.Example records, one image (pair) each
  validation-00000-of-000NN.tfrecord[.gz]
  rejected-00000-of-000NN.jsonl            dead letters: {"path", "key", "reason"} per line
                                           (exact duplicates: reason "duplicate_of: <kept path>")
  manifest.json                            written last; a directory without it is incomplete

Each Example (SCHEMA_VERSION 2) has these features:

  key            bytes  the image's key, derived from the source file name (plus a tile suffix)
  scale          int64  HR side / LR side, one of SCALES (see "Why `scale` is per record")
  lr/encoded     bytes  PNG, 8-bit RGB                         } paired datasets only
  lr/height      int64                                         } (absent from HR-only ones)
  lr/width       int64                                         }
  lr/channels    int64  always 3                               }
  hr/encoded     bytes  PNG, 8-bit RGB, exactly scale x the LR size (HR-only: sides are
                        multiples of scale, as if an LR existed)
  hr/height      int64
  hr/width       int64
  hr/channels    int64  always 3

The feature table FEATURES below is the single source: `to_example` (writer),
`example_codec.serialize` (the Beam workers' writer) and `parse_example` (reader) are all built
from it; HR-only records use its subset without the lr/* features (`feature_table`).

Paired and HR-only datasets (the manifest's `lr_kind`, one value per dataset):

  "bicubic"  LR synthesised by the job: antialiased bicubic downscale of the HR (PIL)
  "files"    LR read from --lr_glob files
  "none"     HR-only (`srgan-prepare --lr=none`): no LR stored; the trainer synthesises it
             (the degradation model, or the same bicubic for validation)

Readers of pairs refuse an HR-only dataset (input_pipeline names the flags that fit it); the
HR-patch stream reads both kinds (on paired data it ignores the stored LR).

Schema versions and what reads them (READABLE_SCHEMA_VERSIONS):

  1  every dataset written before --lr existed: always paired, records identical to version 2
     paired records; its manifest has no lr_kind and reads as "files" when its recorded args
     name an --lr_glob, else "bicubic".
  2  adds HR-only records (the lr/* features absent) and the manifest's lr_kind. Paired records
     are unchanged, so a version-1 dataset needs no rewrite; a version-2 reader refuses only a
     version it does not know (a newer writer's).

Why `scale` is per record although no reader parses it: readers take the scale from the
manifest (one value per dataset, read once, compared with the model's scale before any record
is read), which is the one place to check it. The per-record copy keeps each Example
self-describing - a shard copied out of its directory or inspected on its own (e.g. with
`parse_example`) still says what it was written for - and dropping it would make every dataset
written so far unreadable.
"""

import dataclasses
import json
import posixpath

SCHEMA_VERSION = 2
# Versions this code reads (see the module docstring): version 1 is the paired-only format.
READABLE_SCHEMA_VERSIONS = (1, 2)
# The upscale factors every stage accepts (data prep, generator, export, evaluation): declared once.
SCALES = (2, 3, 4, 8)
MANIFEST_FILENAME = "manifest.json"
TRAIN = "train"
VALIDATION = "validation"
SPLITS = (TRAIN, VALIDATION)
REJECTED_PREFIX = "rejected"
CHANNELS = 3
# The manifest's lr_kind: where each record's LR comes from (module docstring).
LR_BICUBIC = "bicubic"
LR_FILES = "files"
LR_NONE = "none"
LR_KINDS = (LR_BICUBIC, LR_FILES, LR_NONE)

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
# The features an HR-only record lacks.
LR_FEATURES = tuple(name for name in FEATURES if name.startswith("lr/"))


def feature_table(paired=True):
    """FEATURES for paired records, or its subset without LR_FEATURES for HR-only records."""
    if paired:
        return FEATURES
    return {name: dtype for name, dtype in FEATURES.items() if name not in LR_FEATURES}


def _tf():
    """TensorFlow, imported on first use: Beam workers that only write records (through
    data_prep.example_codec) then skip TF's multi-second import."""
    import tensorflow as tf

    return tf


@dataclasses.dataclass(frozen=True)
class PairRecord:
    """One LR/HR pair (or one HR image) ready to be serialised. Images are PNG bytes of 8-bit RGB.

    An HR-only record (`srgan-prepare --lr=none`) has lr_png, lr_height and lr_width None; its HR
    sides are multiples of `scale`.
    """

    key: str
    scale: int
    lr_png: bytes | None
    lr_height: int | None
    lr_width: int | None
    hr_png: bytes
    hr_height: int
    hr_width: int

    @property
    def paired(self):
        return self.lr_png is not None

    def lr_size(self):
        """(height, width) of the LR: the stored one, or for an HR-only record HR / scale, the
        LR the trainer synthesises (the min-size rules and the manifest's min_lr_* use it)."""
        if self.paired:
            return self.lr_height, self.lr_width
        return self.hr_height // self.scale, self.hr_width // self.scale

    def feature_values(self):
        """Values for each name in feature_table(self.paired)."""
        values = {
            "key": self.key.encode("utf-8"),
            "scale": self.scale,
            "hr/encoded": self.hr_png,
            "hr/height": self.hr_height,
            "hr/width": self.hr_width,
            "hr/channels": CHANNELS,
        }
        if self.paired:
            values.update(
                {
                    "lr/encoded": self.lr_png,
                    "lr/height": self.lr_height,
                    "lr/width": self.lr_width,
                    "lr/channels": CHANNELS,
                }
            )
        return values


def _feature(dtype, value):
    tf = _tf()
    if dtype == "bytes":
        return tf.train.Feature(bytes_list=tf.train.BytesList(value=[value]))
    return tf.train.Feature(int64_list=tf.train.Int64List(value=[value]))


def to_example(record: PairRecord):
    """Builds the tf.train.Example for one pair or HR image (returns a tf.train.Example)."""
    tf = _tf()
    values = record.feature_values()
    table = feature_table(record.paired)
    features = {name: _feature(dtype, values[name]) for name, dtype in table.items()}
    return tf.train.Example(features=tf.train.Features(feature=features))


def feature_spec(paired=True):
    """The `tf.io.parse_example` spec, derived from feature_table(paired)."""
    tf = _tf()
    dtypes = {"bytes": tf.string, "int64": tf.int64}
    table = feature_table(paired)
    return {name: tf.io.FixedLenFeature([], dtypes[dtype]) for name, dtype in table.items()}


def parse_example(serialized, paired=True):
    """Parses one (scalar) or a batch (vector) of serialised Examples into a feature dict.

    paired=False parses only the HR features: it reads HR-only records, and the HR of paired
    records (tf.io.parse_example ignores the features a spec does not name). paired=True on an
    HR-only record fails (lr/encoded is required): check the manifest's lr_kind first.
    """
    tf = _tf()
    if serialized.shape.rank == 0:
        return tf.io.parse_single_example(serialized, feature_spec(paired))
    return tf.io.parse_example(serialized, feature_spec(paired))


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
    a reader uses them to refuse a patch size the data cannot serve. For HR-only data they are
    the smallest HR sides / scale (PairRecord.lr_size), so min_lr_* x scale is the smallest HR
    side for every lr_kind.
    """

    num_examples: int
    files: tuple
    min_lr_height: int = 0
    min_lr_width: int = 0


@dataclasses.dataclass(frozen=True)
class Manifest:
    """manifest.json: the record of a complete dataset directory (written last).

    num_inputs == sum of the splits' num_examples + num_rejected; num_duplicates (exact
    duplicates dropped, each a dead letter) is part of num_rejected. lr_kind is one of LR_KINDS
    (module docstring); `paired` is False only for HR-only datasets.
    """

    scale: int
    compressed: bool
    num_inputs: int
    num_rejected: int
    splits: dict  # split name -> SplitInfo
    rejected_files: tuple = ()
    num_duplicates: int = 0
    args: dict = dataclasses.field(default_factory=dict)
    lr_kind: str = LR_BICUBIC
    schema_version: int = SCHEMA_VERSION

    def __post_init__(self):
        if self.lr_kind not in LR_KINDS:
            raise ValueError(f"lr_kind must be one of {LR_KINDS}, got {self.lr_kind!r}.")

    @property
    def paired(self):
        """True when every record stores an LR (lr/* features)."""
        return self.lr_kind != LR_NONE

    def to_json(self):
        data = dataclasses.asdict(self)
        data["compression"] = compression_type(self.compressed) or None
        return json.dumps(data, indent=2, sort_keys=True)

    @classmethod
    def from_json(cls, text):
        """Parses manifest.json of any version (read_manifest refuses the unreadable ones).

        Raises:
          ValueError: a version-2 manifest without lr_kind, or an lr_kind not in LR_KINDS.
        """
        data = json.loads(text)
        data.pop("compression", None)
        if "lr_kind" not in data:
            if data.get("schema_version", 1) != 1:
                raise ValueError(
                    f"manifest of schema version {data.get('schema_version')} has no lr_kind."
                )
            # Version 1 always stored LR: from files when the job was given --lr_glob.
            recorded_glob = (data.get("args") or {}).get("lr_glob")
            data["lr_kind"] = LR_FILES if recorded_glob else LR_BICUBIC
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
      ValueError: the schema version is not one this code reads (READABLE_SCHEMA_VERSIONS),
        or the manifest is malformed.
    """
    tf = _tf()
    path = manifest_path(data_dir)
    if not tf.io.gfile.exists(path):
        raise FileNotFoundError(
            f"{data_dir} has no {MANIFEST_FILENAME}: not a complete data_prep output "
            "(the job writes the manifest last, so a crashed job leaves none)."
        )
    with tf.io.gfile.GFile(path, "r") as f:
        text = f.read()
    version = json.loads(text).get("schema_version")
    if version not in READABLE_SCHEMA_VERSIONS:
        raise ValueError(
            f"{path}: schema version {version}, this code reads versions "
            f"{', '.join(map(str, READABLE_SCHEMA_VERSIONS))} (a newer data_prep wrote it? "
            "update this checkout, or rewrite the dataset with this one)."
        )
    try:
        manifest = Manifest.from_json(text)
    except (TypeError, ValueError) as e:  # TypeError: unknown or missing fields
        raise ValueError(f"{path}: malformed manifest: {e}") from None
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
