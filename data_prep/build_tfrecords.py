"""Turns LR/HR image pairs (or HR-only images) into sharded TFRecords plus manifest.json.

  srgan-prepare --hr_glob='photos/*.png' --output_dir=data --scale=4
  srgan-prepare --hr_glob='photos/*.png' --output_dir=data_hr --scale=4 --lr=none
  python -m data_prep.build_tfrecords ...   (the same)

LR comes from --lr_glob files, or without them from --lr: `bicubic` (default) stores an
antialiased bicubic downscale of each HR image, `none` stores HR only (the trainer synthesises
LR: its degradation model, or the same bicubic for validation). The manifest's lr_kind
("files", "bicubic" or "none") records which.

Flags not defined here go to Beam's PipelineOptions (--runner, --direct_num_workers,
--direct_running_mode, --project, --setup_file=./setup.py, ...); an argument that neither this
module nor Beam defines is refused before anything runs. With no runner options the job runs on
DirectRunner in multi_processing mode with one worker per core.
"""

import sys

import srgan_cli
from data_prep import beam_options  # imports Beam on first use, not here

srgan_cli.quiet_console()  # before Beam (and TensorFlow) are imported
beam_options.hide_import_notices()

from absl import app, flags, logging  # noqa: E402

from data_prep import images, pipeline, schema  # noqa: E402

_HR_GLOB = flags.DEFINE_string("hr_glob", None, "HR images (local or gs:// glob).")
_LR_GLOB = flags.DEFINE_string(
    "lr_glob", None, "LR images; omit to synthesise LR by antialiased bicubic downscale of HR."
)
_LR = flags.DEFINE_enum(
    "lr",
    None,
    (schema.LR_BICUBIC, schema.LR_NONE),
    "Without --lr_glob: 'bicubic' (the default) stores an antialiased bicubic LR with each HR "
    "image; 'none' writes HR-only shards (LR synthesised while training). Not with --lr_glob.",
)
_OUTPUT_DIR = flags.DEFINE_string("output_dir", None, "Dataset directory to write.")
_SCALE = flags.DEFINE_integer(
    "scale", 4, f"HR side / LR side, one of {', '.join(map(str, schema.SCALES))}."
)
_HR_KEY_REGEX = flags.DEFINE_string(
    "hr_key_regex",
    None,
    "Regex with group `key` on HR base names (default: DIV2K and *_HR naming).",
)
_LR_KEY_REGEX = flags.DEFINE_string(
    "lr_key_regex",
    None,
    "Regex with group `key` on LR base names (default: DIV2K 0001x4 and *_LR naming).",
)
_VAL_FRACTION = flags.DEFINE_float(
    "val_fraction",
    0.1,
    "Share of distinct images (by a hash of the HR pixels, so copies share a split) in the "
    "validation split; 0 writes no validation split.",
    lower_bound=0.0,
    upper_bound=1.0,
)
_NUM_SHARDS = flags.DEFINE_integer(
    "num_shards", None, "Shards per split (default: from --shard_size_mb).", lower_bound=1
)
_SHARD_SIZE_MB = flags.DEFINE_float("shard_size_mb", 128.0, "Target shard size.", lower_bound=0.001)
_COMPRESS = flags.DEFINE_bool("compress", False, "GZIP the shards (PNG bytes barely shrink).")
_HR_CROP_SIZE = flags.DEFINE_integer(
    "hr_crop_size",
    None,
    "Cut aligned HR/LR tiles of this HR side (e.g. 480), a multiple of --scale.",
    lower_bound=1,
)
_HR_CROP_STRIDE = flags.DEFINE_integer(
    "hr_crop_stride", None, "HR step between tiles (default: --hr_crop_size).", lower_bound=1
)
_MIN_LR_SIZE = flags.DEFINE_integer(
    "min_lr_size",
    images.DEFAULT_MIN_LR_SIZE,
    "Reject pairs whose LR side is smaller.",
    lower_bound=1,
)
_MAX_PIXELS = flags.DEFINE_integer(
    "max_pixels",
    images.DEFAULT_MAX_PIXELS,
    "Reject images whose header claims more pixels (not decoded).",
    lower_bound=1,
)
_PNG_COMPRESS_LEVEL = flags.DEFINE_integer(
    "png_compress_level",
    1,
    "zlib level for PNGs the job encodes (sources pass through).",
    lower_bound=0,
    upper_bound=9,
)
_OVERWRITE = flags.DEFINE_bool("overwrite", False, "Replace a dataset already in --output_dir.")


def job_config():
    """The JobConfig from the parsed flags (raises ValueError on inconsistent values)."""
    if _LR.value and _LR_GLOB.value:
        raise ValueError(
            f"--lr={_LR.value} synthesises or drops the LR, but --lr_glob gives LR files: "
            "drop one of the two."
        )
    pair = images.PairConfig(
        scale=_SCALE.value,
        min_lr_size=_MIN_LR_SIZE.value,
        max_pixels=_MAX_PIXELS.value,
        hr_crop_size=_HR_CROP_SIZE.value,
        hr_crop_stride=_HR_CROP_STRIDE.value,
        png_compress_level=_PNG_COMPRESS_LEVEL.value,
        hr_only=_LR.value == schema.LR_NONE,
    )
    return pipeline.JobConfig(
        hr_glob=_HR_GLOB.value,
        output_dir=_OUTPUT_DIR.value,
        pair=pair,
        lr_glob=_LR_GLOB.value,
        hr_key_regex=_HR_KEY_REGEX.value,
        lr_key_regex=_LR_KEY_REGEX.value,
        val_fraction=_VAL_FRACTION.value,
        num_shards=_NUM_SHARDS.value,
        shard_size_mb=_SHARD_SIZE_MB.value,
        compressed=_COMPRESS.value,
        overwrite=_OVERWRITE.value,
    )


def main(argv):
    """Checks every argument, then runs the job; user errors are one line and exit status 2."""
    beam_args = argv[1:]
    verbose = srgan_cli.verbose()
    if not verbose and not flags.FLAGS["verbosity"].present:
        logging.set_verbosity(logging.WARNING)  # Beam's INFO chatter buries the summary.
    try:
        beam_options.check_args(beam_args)
        config = job_config()
        # The job's own flags (those defined in this module), recorded in the manifest.
        own = flags.FLAGS.get_flags_for_module(sys.modules[__name__])
        args = {flag.name: flag.value for flag in own}
        options = beam_options.pipeline_options(beam_args, quiet=not verbose)
        noise = () if verbose else beam_options.WORKER_START_NOISE
        with srgan_cli.stderr_without(noise):
            result = pipeline.run(config, options, {**args, "beam_args": beam_args})
    except ValueError as e:  # unknown arguments, JobInputError, bad flag values: user errors.
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(pipeline.summary_line(result, config.output_dir))
    return 0


def parse_flags(argv):
    """absl parses the job's flags; the rest (Beam's options, mistakes) goes to main's check.

    A bad or missing job flag exits with status 2 and one line, like every other user error.
    """
    try:
        return flags.FLAGS(argv, known_only=True)
    except flags.Error as e:
        print(f"error: {'; '.join(str(e).splitlines())} (--help lists the flags)", file=sys.stderr)
        sys.exit(2)


def run():
    """The `srgan-prepare` console script."""
    flags.mark_flags_as_required(["hr_glob", "output_dir"])
    app.run(main, flags_parser=parse_flags)


if __name__ == "__main__":
    run()
