"""Reading and decoding the shards' records, with corrupt records named by shard or skipped.

Records decode to (key, lr, hr) pairs (decoded_pairs) or, HR only, to (key, hr) (decoded_hr:
HR-only records, or the HR of paired ones without decoding their LR).

A record that is not an Example, holds a PNG that does not decode, or whose HR is not scale x
its LR (HR only: whose HR sides are not multiples of the scale), is "corrupt". tf.data cannot
catch an op's error inside a map function, so each record is decoded in a one-element dataset
with ignore_errors, followed by a placeholder flagged not-ok:
the failure becomes data, and the caller either raises an error that names the shard and the
record's index in it, or drops the record, logs it to stderr and counts it.

Framing damage to a shard file itself (truncated or CRC mismatch) is reported by
TFRecordDataset as DataLossError before any record reaches this code.
"""

import sys

import tensorflow as tf

from data_prep import schema

AUTOTUNE = tf.data.AUTOTUNE


def _decode_pair(serialized, scale):
    """Serialized Example -> (key, lr uint8 [h, w, 3], hr uint8 [h*scale, w*scale, 3])."""
    features = schema.parse_example(serialized)
    lr = tf.io.decode_png(features["lr/encoded"], channels=schema.CHANNELS)
    hr = tf.io.decode_png(features["hr/encoded"], channels=schema.CHANNELS)
    check = tf.debugging.assert_equal(
        tf.shape(hr)[:2], tf.shape(lr)[:2] * scale, message="HR size is not scale x LR size"
    )
    with tf.control_dependencies([check]):
        return features["key"], tf.identity(lr), tf.identity(hr)


def _decode_hr(serialized, scale):
    """Serialized Example (HR-only or paired: its LR is not decoded) -> (key, hr uint8 [H, W, 3]),
    H and W multiples of `scale` (the LR the trainer synthesises is exactly HR / scale)."""
    features = schema.parse_example(serialized, paired=False)
    hr = tf.io.decode_png(features["hr/encoded"], channels=schema.CHANNELS)
    check = tf.debugging.assert_equal(
        tf.shape(hr)[:2] % scale, 0, message="HR size is not a multiple of the scale"
    )
    with tf.control_dependencies([check]):
        return features["key"], tf.identity(hr)


def _decoder(with_lr):
    """(decode fn serialized, scale -> (key, *images), number of images)."""
    return (_decode_pair, 2) if with_lr else (_decode_hr, 1)


def _placeholder(num_images):
    empty = tf.zeros([0, 0, schema.CHANNELS], tf.uint8)
    return (tf.constant(False), tf.constant("")) + (empty,) * num_images


def _decode_or_flag(shard, index, serialized, scale, with_lr=True):
    """A one-element dataset: (shard, index, ok, key, *images) with ok=False if the record does
    not decode; images are (lr, hr), or (hr,) without with_lr.

    Errors cannot be caught inside a map function, but a one-record dataset with ignore_errors
    followed by a placeholder turns a failure into data, so the caller can name the shard.
    """
    decode, num_images = _decoder(with_lr)
    decoded = (
        tf.data.Dataset.from_tensors(serialized)
        .map(lambda s: (tf.constant(True),) + decode(s, scale))
        .ignore_errors()
    )
    failed = tf.data.Dataset.from_tensors(_placeholder(num_images))
    return decoded.concatenate(failed).take(1).map(lambda *flagged: (shard, index, *flagged))


# Large sequential reads: few round trips per shard on gs:// (TF's default is 256 KiB).
_READ_BUFFER_BYTES = 8 << 20
# TFRecord framing around each record: length (8) + its CRC (4) + data CRC (4).
_FRAMING_BYTES = 16


def _count_bytes(state, element):
    count, size = state
    record, is_end = element
    size += tf.where(
        is_end,
        tf.constant(0, tf.int64),
        tf.cast(tf.strings.length(record), tf.int64) + _FRAMING_BYTES,
    )
    return (count + 1, size), (count, record, is_end, size)


def read_shard(shard, shard_bytes, compression):
    """(shard name, record index in shard, serialized record) for every record of one shard.

    Args:
      shard: shard path (scalar string tensor).
      shard_bytes: the file's size (int64 tensor); unused for compressed shards.
      compression: schema.compression_type.

    TFRecordDataset's error for a truncated or damaged file (DataLossError) does not name the
    file, so uncompressed shards are read with ignore_errors and, if the records read fall short
    of the file's size, an empty record follows them: it fails to parse, which reports (or
    skips) it by shard and index. GZIP shards (uncompressed size unknown) keep TF's error.
    """
    records = tf.data.TFRecordDataset(
        shard, compression_type=compression, buffer_size=_READ_BUFFER_BYTES
    )
    if compression:
        return records.enumerate().map(lambda index, record: (shard, index, record))
    end = tf.data.Dataset.from_tensors((tf.constant(b""), tf.constant(True)))
    counted = records.ignore_errors().map(lambda r: (r, tf.constant(False))).concatenate(end)
    counted = counted.scan((tf.constant(0, tf.int64), tf.constant(0, tf.int64)), _count_bytes)
    damaged = counted.filter(lambda index, record, is_end, size: ~is_end | (size != shard_bytes))
    return damaged.map(lambda index, record, is_end, size: (shard, index, record))


def _fail_corrupt(shard, index, ok, key, *images):
    check = tf.debugging.Assert(
        ok,
        [
            "Corrupt record (undecodable Example or PNG, HR not scale x LR or not a multiple of "
            "the scale, or the shard file damaged from here on) at index",
            index,
            "of shard",
            shard,
            "; rerun data_prep or set skip_corrupt to skip such records.",
        ],
    )
    with tf.control_dependencies([check]):
        return (tf.identity(key),) + tuple(tf.identity(image) for image in images)


def _report_skip(counter):
    def report(shard, index, ok, key, *images):
        def log_and_count():
            tf.print(
                "input_pipeline: skipping corrupt record",
                index,
                "of shard",
                shard,
                output_stream=sys.stderr,
            )
            if counter is not None:
                counter.assign_add(1)
            return tf.constant(False)

        return tf.cond(ok, lambda: tf.constant(True), log_and_count)

    return report


def _decoded(records, scale, deterministic, skip_corrupt, corrupt_counter, with_lr):
    flagged = records.interleave(
        lambda shard, index, record: _decode_or_flag(shard, index, record, scale, with_lr),
        cycle_length=AUTOTUNE,
        num_parallel_calls=AUTOTUNE,
        deterministic=deterministic,
    )
    if skip_corrupt:
        flagged = flagged.filter(_report_skip(corrupt_counter))
        return flagged.map(lambda shard, index, ok, key, *images: (key, *images))
    return flagged.map(_fail_corrupt)


def decoded_pairs(records, scale, deterministic, skip_corrupt=False, corrupt_counter=None):
    """(shard, index, serialized) records -> (key, lr uint8, hr uint8), decoded in parallel.

    Args:
      records: dataset of (shard name, index in shard, serialized Example) of a paired dataset
        (an HR-only record has no LR: it is corrupt here; input_pipeline checks lr_kind first).
      scale: the dataset's scale.
      deterministic: keep the input order.
      skip_corrupt: drop records that fail (logged to stderr, counted) instead of raising.
      corrupt_counter: optional int64 tf.Variable incremented per skipped record.
    """
    return _decoded(records, scale, deterministic, skip_corrupt, corrupt_counter, with_lr=True)


def decoded_hr(records, scale, deterministic, skip_corrupt=False, corrupt_counter=None):
    """(shard, index, serialized) records -> (key, hr uint8), decoded in parallel.

    Reads HR-only and paired records alike (a paired record's LR is neither parsed nor
    decoded). Arguments as decoded_pairs.
    """
    return _decoded(records, scale, deterministic, skip_corrupt, corrupt_counter, with_lr=False)
