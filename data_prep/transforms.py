"""The Beam transforms of the data_prep job: MatchPairs -> DecodeAndValidate -> DropDuplicates
-> ToExample -> WriteShards, with bad input routed to a tagged dead-letter output at every step.

Dead letters are dicts {"path", "key", "reason"}: one per rejected candidate (a file that
pairs with nothing, each file of a duplicate key, a pair that fails validation or cannot be
read, e.g. "unreadable: dangling symlink (-> gone.png)", or an exact duplicate of a kept pair,
"duplicate_of: <the kept HR path>").
"""

import dataclasses
import hashlib
import json

import apache_beam as beam
from apache_beam.io import filesystems
from apache_beam.io.filesystem import CompressionTypes
from apache_beam.metrics import Metrics

from data_prep import example_codec, file_match, images, pairing, schema

DEAD_LETTER = "dead_letter"
_NAMESPACE = "data_prep"
HR, LR = "hr", "lr"
DUPLICATE_OF = "duplicate_of: "


def dead_letter(path, key, reason):
    return {"path": path, "key": key, "reason": reason}


def split_of(split_id, val_fraction):
    """TRAIN or VALIDATION from a stable hash of `split_id` (never moves between runs).

    The job passes the HR pixel digest: equal images (any name, any lossless encoding) share a
    split, and adding files never moves an image between splits.
    """
    digest = hashlib.sha256(split_id.encode("utf-8")).digest()
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


@dataclasses.dataclass(frozen=True)
class SourcePair:
    """One decoded, validated source pair and the records (one, or one per tile) it yields.

    Attributes:
      key: the pair key.
      hr_path / lr_path: the source files (lr_path None when LR is synthesised).
      hr_digest: images.pixel_digest of the HR pixels: the split is chosen from it.
      content_id: HR digest plus LR digest (if any): pairs with equal ids are exact duplicates.
      records: the schema.PairRecords to write.
    """

    key: str
    hr_path: str
    lr_path: str | None
    hr_digest: str
    content_id: str
    records: tuple


def _read(path):
    with filesystems.FileSystems.open(path, compression_type=CompressionTypes.UNCOMPRESSED) as f:
        return f.read()


class DecodePairFn(beam.DoFn):
    """(key, hr_path, lr_path) -> SourcePair; bad or unreadable pairs -> dead letter."""

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
        except images.ImageError as e:
            Metrics.counter(_NAMESPACE, f"rejected_{type(e).__name__}").inc()
            yield beam.pvalue.TaggedOutput(DEAD_LETTER, dead_letter(path, key, str(e)))
            return
        except OSError as e:  # dangling/looping symlink, vanished file, no permission, ...
            Metrics.counter(_NAMESPACE, "rejected_unreadable").inc()
            reason = file_match.unreadable_reason(path, e)
            yield beam.pvalue.TaggedOutput(DEAD_LETTER, dead_letter(path, key, reason))
            return
        self._records.inc(len(records))
        hr_digest = images.pixel_digest(hr.pixels)
        content_id = hr_digest + (f"+{images.pixel_digest(lr.pixels)}" if lr else "")
        yield SourcePair(key, hr_path, lr_path, hr_digest, content_id, tuple(records))


class DecodeAndValidate(beam.PTransform):
    """pairs -> (SourcePairs, dead letters)."""

    def __init__(self, config: images.PairConfig):
        super().__init__()
        self._config = config

    def expand(self, pairs):
        out = pairs | "DecodePair" >> beam.ParDo(DecodePairFn(self._config)).with_outputs(
            DEAD_LETTER, main="records"
        )
        return out.records, out[DEAD_LETTER]


class KeepFirstFn(beam.DoFn):
    """(content_id, SourcePairs) -> the pair with the smallest (HR, LR) path; the others become
    dead letters "duplicate_of: <its HR path>". Holds one pair's images at a time."""

    def __init__(self):
        self._duplicates = Metrics.counter(_NAMESPACE, "rejected_duplicate")

    def process(self, element):
        _, group = element
        kept, dropped = None, []
        for pair in group:
            if kept is None or _path_order(pair) < _path_order(kept):
                kept, pair = pair, kept
            if pair is not None:
                dropped.append((pair.hr_path, pair.key))
        for path, key in sorted(dropped):
            self._duplicates.inc()
            reason = DUPLICATE_OF + kept.hr_path
            yield beam.pvalue.TaggedOutput(DEAD_LETTER, dead_letter(path, key, reason))
        yield kept


def _path_order(pair):
    return pair.hr_path, pair.lr_path or ""


class DropDuplicates(beam.PTransform):
    """SourcePairs -> (one SourcePair per distinct content, dead letters for the others).

    Exact duplicates (equal decoded HR pixels, and equal LR pixels when LR is given) would weigh
    one image several times in training; keeping the one with the smallest path is
    deterministic and names the kept file in every dead letter.
    """

    def expand(self, pairs):
        out = (
            pairs
            | "ByContent" >> beam.Map(lambda s: (s.content_id, s))
            | "GroupByContent" >> beam.GroupByKey()
            | "KeepFirst" >> beam.ParDo(KeepFirstFn()).with_outputs(DEAD_LETTER, main="kept")
        )
        return out.kept, out[DEAD_LETTER]


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
