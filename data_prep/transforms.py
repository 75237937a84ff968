"""The Beam transforms of the data_prep job: MatchPairs -> DecodeAndValidate -> ToExample ->
WriteShards, with bad input routed to a tagged dead-letter output at every step.

Dead letters are dicts {"path", "key", "reason"}: one per rejected candidate (a file that
pairs with nothing, each file of a duplicate key, or a pair that fails validation).
"""

import hashlib
import json

import apache_beam as beam
from apache_beam.io import filesystems
from apache_beam.io.filesystem import CompressionTypes
from apache_beam.metrics import Metrics

from data_prep import example_codec, images, pairing, schema

DEAD_LETTER = "dead_letter"
_NAMESPACE = "data_prep"
HR, LR = "hr", "lr"


def dead_letter(path, key, reason):
    return {"path": path, "key": key, "reason": reason}


def split_of(source_key, val_fraction):
    """TRAIN or VALIDATION from a stable hash of the source key (never moves between runs)."""
    digest = hashlib.sha256(source_key.encode("utf-8")).digest()
    position = int.from_bytes(digest[:8], "big") / 2.0**64
    return schema.VALIDATION if position < val_fraction else schema.TRAIN


class KeyFileFn(beam.DoFn):
    """path -> (key, (role, path)); names the key regex does not match become dead letters."""

    def __init__(self, role, scale, regex=None):
        self._role, self._scale, self._regex = role, scale, regex
        self._files = Metrics.counter(_NAMESPACE, f"{role}_files")

    def process(self, path):
        self._files.inc()
        try:
            key = pairing.file_key(self._role == HR, path, self._scale, self._regex)
        except ValueError as e:
            Metrics.counter(_NAMESPACE, "rejected_bad_name").inc()
            yield beam.pvalue.TaggedOutput(DEAD_LETTER, dead_letter(path, None, str(e)))
            return
        yield key, (self._role, path)


class PairFilesFn(beam.DoFn):
    """(key, files) -> (key, hr_path, lr_path or None); other groupings become dead letters."""

    def __init__(self, synthesize_lr):
        self._synthesize_lr = synthesize_lr
        self._pairs = Metrics.counter(_NAMESPACE, "pairs_matched")

    def process(self, element):
        key, grouped = element
        hrs = sorted(path for _, path in grouped[HR])
        lrs = sorted(path for _, path in grouped.get(LR, ()))
        if self._synthesize_lr and len(hrs) == 1:
            reason = None
        else:
            reason = pairing.pairing_problem(len(hrs), len(lrs))
        if reason:
            for path in hrs + lrs:
                Metrics.counter(_NAMESPACE, "rejected_pairing").inc()
                yield beam.pvalue.TaggedOutput(DEAD_LETTER, dead_letter(path, key, reason))
            return
        self._pairs.inc()
        yield key, hrs[0], (lrs[0] if lrs else None)


class MatchPairs(beam.PTransform):
    """{"hr": paths[, "lr": paths]} -> (pairs, dead letters); no "lr" means synthesise LR."""

    def __init__(self, scale, hr_regex=None, lr_regex=None):
        super().__init__()
        self._scale, self._hr_regex, self._lr_regex = scale, hr_regex, lr_regex

    def expand(self, paths):
        keyed, rejected = {}, []
        for role, regex in ((HR, self._hr_regex), (LR, self._lr_regex)):
            if role not in paths:
                continue
            out = paths[role] | f"Key{role.upper()}" >> beam.ParDo(
                KeyFileFn(role, self._scale, regex)
            ).with_outputs(DEAD_LETTER, main="keyed")
            keyed[role] = out.keyed
            rejected.append(out[DEAD_LETTER])
        matched = (
            keyed
            | "GroupByKey" >> beam.CoGroupByKey()
            | "PairFiles"
            >> beam.ParDo(PairFilesFn(synthesize_lr=LR not in paths)).with_outputs(
                DEAD_LETTER, main="pairs"
            )
        )
        rejected.append(matched[DEAD_LETTER])
        return matched.pairs, tuple(rejected) | "MergeRejected" >> beam.Flatten()


def _read(path):
    with filesystems.FileSystems.open(path, compression_type=CompressionTypes.UNCOMPRESSED) as f:
        return f.read()


class DecodePairFn(beam.DoFn):
    """(key, hr_path, lr_path) -> (key, PairRecord) per pair or tile; bad pairs -> dead letter."""

    def __init__(self, config: images.PairConfig):
        self._config = config
        self._records = Metrics.counter(_NAMESPACE, "records")
        self._bytes_read = Metrics.counter(_NAMESPACE, "bytes_read")

    def _decode(self, path):
        data = _read(path)
        self._bytes_read.inc(len(data))
        return images.decode_rgb(data, self._config.max_pixels)

    def process(self, element):
        key, hr_path, lr_path = element
        path = hr_path
        try:
            hr = self._decode(hr_path)
            path = lr_path
            lr = self._decode(lr_path) if lr_path else None
            path = lr_path or hr_path
            records = images.prepare_pair(key, hr, lr, self._config)
        except (images.ImageError, OSError) as e:
            Metrics.counter(_NAMESPACE, f"rejected_{type(e).__name__}").inc()
            yield beam.pvalue.TaggedOutput(DEAD_LETTER, dead_letter(path, key, str(e)))
            return
        self._records.inc(len(records))
        for record in records:
            yield key, record


class DecodeAndValidate(beam.PTransform):
    """pairs -> (records keyed by source key, dead letters)."""

    def __init__(self, config: images.PairConfig):
        super().__init__()
        self._config = config

    def expand(self, pairs):
        out = pairs | "DecodePair" >> beam.ParDo(DecodePairFn(self._config)).with_outputs(
            DEAD_LETTER, main="records"
        )
        return out.records, out[DEAD_LETTER]


class ToExampleFn(beam.DoFn):
    def __init__(self, split):
        self._examples = Metrics.counter(_NAMESPACE, f"examples_{split}")

    def process(self, record):
        self._examples.inc()
        yield example_codec.serialize(record)


class ToExample(beam.PTransform):
    """PairRecords -> serialised tf.train.Example bytes."""

    def __init__(self, split):
        super().__init__()
        self._split = split

    def expand(self, records):
        return records | "Serialize" >> beam.ParDo(ToExampleFn(self._split))


class WriteShards(beam.PTransform):
    """Serialised examples -> `schema.shard_name(split, i, num_shards, compressed)` files."""

    def __init__(self, output_dir, split, num_shards, compressed):
        super().__init__()
        self._output_dir, self._split = output_dir, split
        self._num_shards, self._compressed = num_shards, compressed

    def expand(self, examples):
        suffix = schema.shard_name(self._split, 0, 1, self._compressed).split("-of-00001")[1]
        return examples | "WriteTFRecord" >> beam.io.WriteToTFRecord(
            filesystems.FileSystems.join(self._output_dir, self._split),
            file_name_suffix=suffix,
            num_shards=self._num_shards,
            shard_name_template="-SSSSS-of-NNNNN",
            compression_type=(
                CompressionTypes.GZIP if self._compressed else CompressionTypes.UNCOMPRESSED
            ),
        )


class WriteDeadLetters(beam.PTransform):
    """Dead letters -> `rejected-00000-of-00001.jsonl` (one JSON object per line)."""

    def __init__(self, output_dir):
        super().__init__()
        self._output_dir = output_dir

    def expand(self, rejected):
        return (
            rejected
            | "ToJson" >> beam.Map(lambda d: json.dumps(d, sort_keys=True))
            | "WriteJsonl"
            >> beam.io.WriteToText(
                filesystems.FileSystems.join(self._output_dir, schema.REJECTED_PREFIX),
                file_name_suffix=".jsonl",
                num_shards=1,
                shard_name_template="-SSSSS-of-NNNNN",
            )
        )
