"""A model's version folders, and what each exported version records about itself.

  EXPORT_BASE/NAME/<version>/   saved_model.pb, variables/, assets.extra/ (contract.WARMUP_FILE,
                                contract.METADATA_FILE)

The exporter picks the next version here and the local server the newest one, with the same rule
as tensorflow_model_server: only names that are plain integers are versions.
"""

import contextlib
import json
import os
import posixpath
import uuid

import tensorflow as tf

from serving import contract

METADATA_FORMAT_VERSION = 1
# What an export's graph computes in (serving.export_lib.PRECISIONS); exports written before the
# key existed are float32.
DEFAULT_PRECISION = "float32"


def list_versions(model_base_path):
    """Sorted integer versions present under EXPORT_BASE/NAME (empty if it does not exist)."""
    if not tf.io.gfile.isdir(model_base_path):
        return []
    names = (n.rstrip("/") for n in tf.io.gfile.listdir(model_base_path))
    return sorted(int(n) for n in names if n.isascii() and n.isdigit())


def next_version(model_base_path):
    versions = list_versions(model_base_path)
    return versions[-1] + 1 if versions else 1


def version_dir(model_base_path, version):
    return posixpath.join(model_base_path, str(int(version)))


@contextlib.contextmanager
def staged_version(model_base_path, version=None):
    """Writes a new version complete or not at all: yields (temp_dir, final_dir).

    The block writes the version's files into temp_dir (created, inside model_base_path, with a
    name that is not an integer, so no server ever loads it); when the block ends without an
    error it is renamed to final_dir, else removed. A crash leaves at most a `.tmp-*` folder.

    Args:
      model_base_path: EXPORT_BASE/NAME.
      version: the integer version; None: one more than the newest present.

    Raises:
      FileExistsError: the version already exists (versions are never overwritten).
      ValueError: a version below 1.
    """
    version = next_version(model_base_path) if version is None else int(version)
    if version < 1:
        raise ValueError(f"version must be a positive integer, got {version}.")
    final_dir = version_dir(model_base_path, version)
    if tf.io.gfile.exists(final_dir):
        raise FileExistsError(
            f"{final_dir} already exists; versions are never overwritten. Leave out --version "
            f"to export as version {next_version(model_base_path)}."
        )
    temp_dir = posixpath.join(model_base_path, f".tmp-{version}-{os.getpid()}-{uuid.uuid4().hex}")
    try:
        tf.io.gfile.makedirs(temp_dir)
        yield temp_dir, final_dir
        tf.io.gfile.rename(temp_dir, final_dir, overwrite=False)
    finally:
        if tf.io.gfile.exists(temp_dir):
            tf.io.gfile.rmtree(temp_dir)


def make_metadata(generator_config, tiling, checkpoint=None, precision=DEFAULT_PRECISION):
    """The metadata of an export.

    Args:
      generator_config: the trainer's GeneratorConfig (a dataclass with `scale`) as a dict.
      tiling: {"tile_size", "overlap", "max_input_pixels"} of the serving graph.
      checkpoint: the exported checkpoint prefix, if any.
      precision: the dtype the generator computes in ("float32", "bfloat16", "float16").
    """
    return {
        "format_version": METADATA_FORMAT_VERSION,
        "scale": int(generator_config["scale"]),
        "generator": dict(generator_config),
        "tiling": dict(tiling),
        "checkpoint": checkpoint,
        "precision": precision,
    }


def write_metadata(export_dir, metadata):
    """Writes contract.METADATA_FILE inside `export_dir` (before the version is renamed final)."""
    path = posixpath.join(export_dir, contract.METADATA_FILE)
    tf.io.gfile.makedirs(posixpath.dirname(path))
    with tf.io.gfile.GFile(path, "w") as f:
        f.write(json.dumps(metadata, indent=2, sort_keys=True))
    return path


def read_metadata(export_dir):
    """The metadata dict an export recorded (scale, generator, tiling, checkpoint, precision).

    An export older than the precision key reads as DEFAULT_PRECISION (it was float32).

    Raises:
      FileNotFoundError: not an export of this project (or one older than the metadata file).
      ValueError: a metadata file this version cannot read.
    """
    path = posixpath.join(export_dir, contract.METADATA_FILE)
    if not tf.io.gfile.exists(path):
        raise FileNotFoundError(
            f"{path} not found: {export_dir} is not a SavedModel exported by serving.export "
            "(exports record their scale and generator there)."
        )
    with tf.io.gfile.GFile(path) as f:
        metadata = json.load(f)
    if metadata.get("format_version") != METADATA_FORMAT_VERSION or "scale" not in metadata:
        raise ValueError(f"{path}: unsupported export metadata {metadata!r}.")
    metadata.setdefault("precision", DEFAULT_PRECISION)
    return metadata
