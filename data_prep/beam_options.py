"""Beam's pipeline options for the data_prep job: a strict check, local defaults, a quiet console.

Beam parses leniently: `PipelineOptions` keeps what some PipelineOptions subclass defines and
only logs "Discarding unparseable args" for the rest, so a mistyped flag runs the job with a
default. `check_args` refuses such arguments instead, with Beam's own parser: the one
`PipelineOptions.get_all_options` builds from every registered PipelineOptions subclass, after
the runner named by --runner is imported, so the options of any installed runner are known.

The local SDK workers (DirectRunner multi_processing) are `python -m
apache_beam.runners.worker.sdk_worker_main` processes with this process's environment and
stderr. Each logs to its own stderr and relays the same records to this process, which prints
them as "Worker: severity: ...". `pipeline_options(quiet=True)` sets both from the options the
worker reads at start (--default_sdk_harness_log_level, --sdk_harness_log_level_overrides).
Two lines per worker come before it reads any option and no option or environment variable
reaches them: importing Beam logs the apitools notice (below) on the root logger, which has no
handler yet, so `logging.basicConfig` gives it a stderr handler; the worker then sets the root
level to INFO and logs "Logging handler created.". The entry drops those two (WORKER_START_NOISE)
from the stderr the workers inherit, with srgan_cli.stderr_without.

Beam is imported on first use (inside the functions), so that an entry can call
`hide_import_notices()` before anything imports Beam.
"""

import json
import logging
import os

import srgan_cli

# Beam's base install logs this on the root logger at import, from a module only BigQuery IO
# uses (its google-apitools dependency comes with apache-beam[gcp]); the job never needs it.
_IMPORT_NOTICES = ("apitools not found, and bigquery client libraries are not available",)
# The two lines each local SDK worker prints before it reads any option (see above).
WORKER_START_NOISE = (*_IMPORT_NOTICES, "INFO:__main__:Logging handler created.")

# Loggers of the SDK worker processes (DirectRunner multi_processing) whose warnings are local
# runner artefacts, silenced in the workers with Beam's own per-logger level option:
#   __main__ (sdk_worker_main): "No semi_persistent_directory found" - local workers get no
#     staging directory; it matters only for objects registered in a pickled main session,
#     and this job pickles none.
#   apache_beam.options.pipeline_options: "Discarding unparseable args: --pipeline_type_check
#     --direct_runner_use_stacked_bundle" - the worker rebuilds its options from a dict
#     (PipelineOptions.from_dictionary) that turns the default True of these store_false
#     options into flags that do not exist; the job's real arguments were checked by check_args.
_WORKER_LOG_LEVELS = {"__main__": "ERROR", "apache_beam.options.pipeline_options": "ERROR"}


class BeamArgsError(ValueError):
    """Arguments that neither the job nor Beam's PipelineOptions accept."""


def hide_import_notices():
    """Drops the optional-dependency notice Beam logs when imported (call before importing it).

    Does nothing with SRGAN_VERBOSE=1.
    """
    if srgan_cli.verbose():
        return

    def keep(record):
        return not record.getMessage().startswith(_IMPORT_NOTICES)

    logging.getLogger().addFilter(keep)


def _import_runner(args):
    """Imports the runner --runner names, registering any PipelineOptions subclass it defines."""
    from apache_beam.options.pipeline_options import PipelineOptions, StandardOptions
    from apache_beam.runners import create_runner

    runner = PipelineOptions(args).view_as(StandardOptions).runner
    if runner:
        try:
            create_runner(runner)
        except (ImportError, ValueError) as e:  # not installed / no such runner
            raise BeamArgsError(f"--runner={runner}: {e}") from None


def _raise_instead_of_exit(parser):
    """argparse prints its usage (every Beam option) and exits on a bad value; raise instead."""
    beam_error = parser.error

    def error(message):
        if message.startswith("ambiguous option: "):
            return beam_error(message)  # Beam's parser ignores these (prefix matches).
        raise BeamArgsError(f"Beam option {message}")

    parser.error = error


def unknown_args(args):
    """The arguments Beam's PipelineOptions parser does not know (positionals included).

    Raises:
      BeamArgsError: --runner names a runner that is not installed, or a known Beam option has
        a bad value (e.g. --direct_num_workers=two).
    """
    from apache_beam.options.pipeline_options import PipelineOptions

    args = list(args)
    _import_runner(args)
    unknown = []

    def parse(parser):  # called by get_all_options with the parser of every options class
        _raise_instead_of_exit(parser)
        unknown.extend(parser.parse_known_args(args)[1])

    # retain_unknown_options=True: the path that does not log "Discarding unparseable args".
    PipelineOptions(args).get_all_options(retain_unknown_options=True, add_extra_args_fn=parse)
    return unknown


def check_args(args):
    """Refuses arguments Beam does not know, naming them (one line).

    Args:
      args: the command line arguments left after the job's own flags were parsed.

    Raises:
      BeamArgsError: some arguments are neither the job's flags nor Beam options.
    """
    unknown = unknown_args(args)
    flag_like = [arg for arg in unknown if arg.startswith("-")]
    positional = [arg for arg in unknown if not arg.startswith("-")]
    problems = []
    if flag_like:
        problems.append(
            f"unknown flags: {' '.join(flag_like)} (neither this job's flags nor Beam's "
            "PipelineOptions define them; --help lists the job's flags)"
        )
    if positional:
        problems.append(f"positional arguments are not accepted: {' '.join(positional)}")
    if problems:
        raise BeamArgsError("; ".join(problems))


def pipeline_options(args, quiet=True):
    """PipelineOptions for `args`, by default DirectRunner multi_processing on every core.

    Args:
      args: Beam arguments (already checked); later ones win over the defaults here.
      quiet: silence the local SDK workers' start-up notices (see _WORKER_LOG_LEVELS) and
        their INFO logs; False keeps Beam's own logging.
    """
    from apache_beam.options.pipeline_options import PipelineOptions

    defaults = [
        "--runner=DirectRunner",  # named, so Beam does not log that it picked its default
        "--direct_running_mode=multi_processing",
        f"--direct_num_workers={os.cpu_count() or 1}",
    ]
    if quiet:
        defaults += [
            "--default_sdk_harness_log_level=WARNING",
            f"--sdk_harness_log_level_overrides={json.dumps(_WORKER_LOG_LEVELS)}",
        ]
    return PipelineOptions(defaults + list(args))
