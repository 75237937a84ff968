"""The data_prep job as a library: build the Beam pipeline, run it, write the manifest last.

Every file a glob names is a candidate (data_prep.file_match lists them all, including names
with a backslash and dangling or looping symlinks, which Beam's own match drops): it ends up in
a written example or in a dead letter with its reason ("unreadable: dangling symlink (-> x)").

Counting rule (keeps `num_inputs == sum(num_examples) + num_rejected` true): a candidate is a
matched pair, each file that pairs with nothing, each file of a duplicate key, and each name the
key regex rejects. A rejected candidate is one dead-letter line. An accepted pair is one
candidate per example it yields: one, or one per tile with `hr_crop_size` (the summary line
also reports the number of source pairs).

Duplicates and the split: the split of a pair is chosen from a hash of its decoded HR pixels
(transforms.split_of of images.pixel_digest), not of its name, so copies of one image under
other names or in other lossless encodings all fall in the same split; a validation image is
never a training image. Exact duplicates (equal HR pixels, and equal LR pixels when LR files are
given) are kept once - the pair with the smallest path - and every other copy is a dead letter
"duplicate_of: <kept HR path>", counted in num_rejected and in the manifest's num_duplicates.
Pairs that share HR pixels but have different LR files (two degradations) are both kept, in
the same split. Hashing content keeps the split deterministic and stable when files are added.
"""

import dataclasses
import json
import math
import os

import apache_beam as beam
from apache_beam.io.filesystems import FileSystems

from data_prep import file_match, images, schema, transforms

_STATS_NAME = "_job_stats.jsonl"
_DUPLICATES = "_duplicates"  # the stats row of the duplicate count (others are named by split)
_WRITE_PROBE = ".write-probe"
_STALE_PATTERNS = (
    "train-*",
    "validation-*",
    f"{schema.REJECTED_PREFIX}-*",
    "beam-temp-*",
    _STATS_NAME,
)


class JobInputError(ValueError):
    """A user error found before the pipeline starts (bad glob, existing or unwritable output)."""


@dataclasses.dataclass(frozen=True)
class JobConfig:
    """Everything the job needs besides the Beam pipeline options.

    Attributes:
      hr_glob: HR images (local path or any Beam FileSystems URL, e.g. gs://).
      output_dir: where shards, dead letters and manifest.json go.
      pair: decoding / validation / tiling rules; pair.hr_only writes HR-only records.
      lr_glob: LR images; None synthesises LR from HR (or stores none with pair.hr_only).
      hr_key_regex / lr_key_regex: regex with a group `key` for other file layouts.
      val_fraction: share of distinct HR images (by a hash of their pixels) in validation.
      num_shards: shards per split; None derives it from `shard_size_mb`.
      shard_size_mb: target shard size when `num_shards` is None.
      compressed: GZIP shards.
      overwrite: replace an existing dataset in `output_dir`.
    """

    hr_glob: str
    output_dir: str
    pair: images.PairConfig
    lr_glob: str | None = None
    hr_key_regex: str | None = None
    lr_key_regex: str | None = None
    val_fraction: float = 0.1
    num_shards: int | None = None
    shard_size_mb: float = 128.0
    compressed: bool = False
    overwrite: bool = False

    def __post_init__(self):
        if self.pair.hr_only and self.lr_glob:
            raise ValueError(
                "--lr=none writes HR-only shards, but --lr_glob gives LR files to pair with "
                "them: drop one of the two."
            )

    @property
    def lr_kind(self):
        """The manifest's lr_kind (schema.LR_KINDS)."""
        if self.lr_glob:
            return schema.LR_FILES
        return schema.LR_NONE if self.pair.hr_only else schema.LR_BICUBIC

    def splits(self):
        return schema.SPLITS if self.val_fraction > 0 else (schema.TRAIN,)


def _join(name, output_dir):
    return FileSystems.join(output_dir, name)


def prepare_output_dir(output_dir, overwrite):
    """Refuses a finished dataset unless `overwrite`; then deletes manifest first, then shards.

    Raises:
      JobInputError: a dataset is there and not `overwrite`, or the directory cannot be created
        or written (read-only, no permission, a file in the way): one line naming it and why,
        before any Beam work starts.
    """
    manifest = schema.manifest_path(output_dir)
    try:
        if FileSystems.exists(manifest):
            if not overwrite:
                raise JobInputError(
                    f"{output_dir} already holds a dataset ({manifest}); pass "
                    "--overwrite to replace it."
                )
            FileSystems.delete([manifest])  # First: a half-deleted directory must look incomplete.
        patterns = [_join(p, output_dir) for p in _STALE_PATTERNS]
        stale = [m.path for r in FileSystems.match(patterns) for m in r.metadata_list]
        if stale:
            FileSystems.delete(stale)
        if not FileSystems.exists(output_dir):
            FileSystems.mkdirs(output_dir)
        _check_writable(output_dir)
    except OSError as e:  # BeamIOError is one too
        raise JobInputError(
            f"cannot write to the output directory {output_dir}: {file_match.cause(e)}"
        ) from None


def _check_writable(output_dir):
    """Creates and deletes a small file: Beam's writers would fail only after all the decoding."""
    probe = _join(f"{_WRITE_PROBE}-{os.getpid()}", output_dir)
    with FileSystems.create(probe) as f:
        f.write(b"")
    FileSystems.delete([probe])


def input_bytes(glob, required):
    """Total size of the files `glob` matches; raises JobInputError if required and none."""
    try:
        metadata = file_match.match(glob)
    except OSError as e:
        raise JobInputError(f"cannot list {glob!r}: {file_match.cause(e)}") from None
    if required and not metadata:
        raise JobInputError(f"no files match {glob!r}")
    return sum(m.size_in_bytes for m in metadata)


def shards_per_split(config, total_bytes):
    """Shard count per split: --num_shards, or from the input size (PNG pass-through ~ 1:1)."""
    shares = {schema.TRAIN: 1.0 - config.val_fraction, schema.VALIDATION: config.val_fraction}
    if config.num_shards:
        return {split: config.num_shards for split in config.splits()}
    target = config.shard_size_mb * 2**20
    return {
        split: max(1, math.ceil(total_bytes * shares[split] / target)) for split in config.splits()
    }


class _SplitStatsFn(beam.CombineFn):
    """(count, min LR height, min LR width, source pairs) of one split's records."""

    def create_accumulator(self):
        return 0, math.inf, math.inf, 0

    def add_input(self, acc, element):
        key, record = element
        first = record.key == key or record.key == images.tile_key(key, 0, 0)
        lr_height, lr_width = record.lr_size()  # HR-only: HR / scale
        return (
            acc[0] + 1,
            min(acc[1], lr_height),
            min(acc[2], lr_width),
            acc[3] + int(first),
        )

    def merge_accumulators(self, accumulators):
        count, height, width, pairs = self.create_accumulator()
        for acc in accumulators:
            count, height, width, pairs = (
                count + acc[0],
                min(height, acc[1]),
                min(width, acc[2]),
                pairs + acc[3],
            )
        return count, height, width, pairs

    def extract_output(self, acc):
        finite = acc[0] > 0
        return {
            "num_examples": acc[0],
            "min_lr_height": int(acc[1]) if finite else 0,
            "min_lr_width": int(acc[2]) if finite else 0,
            "num_source_pairs": acc[3],
        }


def build(pipeline, config, num_shards):
    """Adds the whole job to `pipeline`; `num_shards` maps split -> shard count."""
    paths = {transforms.HR: pipeline | "MatchHR" >> _match(config.hr_glob)}
    if config.lr_glob:
        paths[transforms.LR] = pipeline | "MatchLR" >> _match(config.lr_glob)
    pairs, unpaired = paths | "MatchPairs" >> transforms.MatchPairs(
        config.pair.scale, config.hr_key_regex, config.lr_key_regex
    )
    decoded, invalid = pairs | "DecodeAndValidate" >> transforms.DecodeAndValidate(config.pair)
    distinct, duplicates = decoded | "DropDuplicates" >> transforms.DropDuplicates()
    by_split = distinct | "SplitByPixels" >> beam.Partition(
        lambda pair, _: schema.SPLITS.index(
            transforms.split_of(pair.hr_digest, config.val_fraction)
        ),
        2,
    )
    rejected = (unpaired, invalid, duplicates) | "MergeRejected" >> beam.Flatten()
    rejected | "WriteRejected" >> transforms.WriteDeadLetters(config.output_dir)
    stats = [
        rejected
        | "CountRejected" >> beam.combiners.Count.Globally()
        | "RejectedJson" >> beam.Map(lambda n: {"split": None, "num_rejected": n}),
        duplicates
        | "CountDuplicates" >> beam.combiners.Count.Globally()
        | "DuplicatesJson" >> beam.Map(lambda n: {"split": _DUPLICATES, "num_duplicates": n}),
    ]
    for split in config.splits():
        split_records = by_split[schema.SPLITS.index(split)] | f"Records{split.title()}" >> (
            beam.FlatMap(lambda pair: [(pair.key, record) for record in pair.records])
        )
        (
            split_records
            | f"Drop{split.title()}Keys" >> beam.Values()
            | f"ToExample{split.title()}" >> transforms.ToExample(split)
            | f"Write{split.title()}"
            >> transforms.WriteShards(
                config.output_dir, split, num_shards[split], config.compressed
            )
        )
        stats.append(
            split_records
            | f"Stats{split.title()}" >> beam.CombineGlobally(_SplitStatsFn())
            | f"Label{split.title()}" >> beam.Map(lambda s, name=split: {**s, "split": name})
        )
    # One small file from one element: a plain write, far fewer stages than a WriteToText sink.
    (
        stats
        | "MergeStats" >> beam.Flatten()
        | "CollectStats" >> beam.combiners.ToList()
        | "WriteStats" >> beam.Map(_write_json_lines, _join(_STATS_NAME, config.output_dir))
    )


def _write_json_lines(rows, path):
    with FileSystems.create(path) as f:
        f.write("".join(json.dumps(row) + "\n" for row in rows).encode("utf-8"))


def _match(glob):
    """Every path `glob` names (file_match, not fileio.MatchFiles: see the module docstring),
    listed on a worker and spread over the workers like MatchFiles does."""
    return (
        "Glob" >> beam.Create([glob])
        | "List" >> beam.FlatMap(lambda g: [m.path for m in file_match.match(g)])
        | "Spread" >> beam.Reshuffle()
    )


def _read_stats(output_dir):
    path = _join(_STATS_NAME, output_dir)
    with FileSystems.open(path) as f:
        lines = [json.loads(line) for line in f.read().decode("utf-8").splitlines() if line]
    FileSystems.delete([path])
    return {line["split"]: line for line in lines}


def _write_atomically(path, text):
    temp = f"{path}.tmp-{os.getpid()}"
    with FileSystems.create(temp) as f:
        f.write(text.encode("utf-8"))
    FileSystems.rename([temp], [path])


@dataclasses.dataclass(frozen=True)
class JobResult:
    manifest: schema.Manifest
    num_source_pairs: int  # accepted source pairs (== examples unless tiled)
    counters: dict = dataclasses.field(default_factory=dict)  # Beam metrics, name -> value


def run(config: JobConfig, options, args=None) -> JobResult:
    """Runs the job to completion and writes manifest.json last.

    Args:
      config: the job's own settings.
      options: Beam PipelineOptions (runner, workers, cloud settings).
      args: the run's arguments, recorded in the manifest.

    Raises:
      JobInputError: nothing matches --hr_glob, a glob's directory cannot be listed, the output
        exists without `overwrite`, or the output directory cannot be written.
    """
    total = input_bytes(config.hr_glob, required=True)
    if config.lr_glob:
        total += input_bytes(config.lr_glob, required=True)
    prepare_output_dir(config.output_dir, config.overwrite)
    num_shards = shards_per_split(config, total)
    job = beam.Pipeline(options=options)
    build(job, config, num_shards)
    state = job.run()
    state.wait_until_finish()
    stats = _read_stats(config.output_dir)
    splits = {
        split: schema.SplitInfo(
            num_examples=stats[split]["num_examples"],
            files=tuple(
                schema.shard_name(split, i, num_shards[split], config.compressed)
                for i in range(num_shards[split])
            ),
            min_lr_height=stats[split]["min_lr_height"],
            min_lr_width=stats[split]["min_lr_width"],
        )
        for split in config.splits()
    }
    num_rejected = stats[None]["num_rejected"]
    manifest = schema.Manifest(
        scale=config.pair.scale,
        compressed=config.compressed,
        num_inputs=sum(s.num_examples for s in splits.values()) + num_rejected,
        num_rejected=num_rejected,
        splits=splits,
        rejected_files=(f"{schema.REJECTED_PREFIX}-00000-of-00001.jsonl",),
        num_duplicates=stats[_DUPLICATES]["num_duplicates"],
        args=args or {},
        lr_kind=config.lr_kind,
    )
    _write_atomically(schema.manifest_path(config.output_dir), manifest.to_json())
    pairs = sum(stats[split]["num_source_pairs"] for split in config.splits())
    return JobResult(manifest=manifest, num_source_pairs=pairs, counters=_counters(state))


def _counters(state):
    """The job's Beam metrics counters, name -> value summed over steps ({} if unsupported)."""
    try:
        results = state.metrics().query()["counters"]
    except (NotImplementedError, AttributeError, KeyError):
        return {}
    counters = {}
    for result in results:
        value = result.committed if result.committed is not None else result.attempted
        counters[result.key.metric.name] = counters.get(result.key.metric.name, 0) + value
    return counters


def summary_line(result: JobResult, output_dir):
    """One line saying where every input went."""
    m = result.manifest
    splits = " + ".join(f"{info.num_examples} {name}" for name, info in m.splits.items())
    kind, sources = ("", "pairs") if m.paired else ("HR-only ", "images")
    return (
        f"data_prep: {m.num_inputs} inputs -> {splits} {kind}examples "
        f"(from {result.num_source_pairs} source {sources}), {m.num_rejected} rejected "
        f"({m.num_duplicates} exact duplicates; see {m.rejected_files[0]}); "
        f"manifest: {schema.manifest_path(output_dir)}"
    )
