"""The strict check of Beam arguments: Beam's own parser decides, for every installed runner."""

import logging

import pytest

from data_prep import beam_options

_VALID = {
    "dataflow": [
        "--runner=DataflowRunner",
        "--project=P",
        "--region=R",
        "--temp_location=gs://b/t",
        "--setup_file=./setup.py",
        "--no_use_public_ips",
    ],
    "flink": ["--runner=FlinkRunner", "--flink_master=H:8081", "--environment_type=LOOPBACK"],
    "spark": [
        "--runner=SparkRunner",
        "--spark_master_url=spark://H:7077",
        "--environment_type=LOOPBACK",
    ],
    "direct": ["--direct_num_workers=2", "--direct_running_mode=multi_processing"],
    "repeated and spaced": [
        "--experiments=a",
        "--experiments=b",
        "--experiments",
        "c",
        "--project",
        "P",
        '--sdk_harness_log_level_overrides={"x": "INFO"}',
    ],
}


@pytest.mark.parametrize("args", _VALID.values(), ids=_VALID.keys())
def test_options_of_every_runner_pass(args):
    assert beam_options.unknown_args(args) == []
    beam_options.check_args(args)


def test_unknown_flags_and_positionals_are_named_in_one_line():
    with pytest.raises(beam_options.BeamArgsError) as raised:
        beam_options.check_args(
            ["--runner=DirectRunner", "--direct_num_workrs=2", "x", "--scael=4"]
        )
    message = str(raised.value)
    assert "\n" not in message
    assert message.startswith("unknown flags: --direct_num_workrs=2 --scael=4 (")
    assert message.endswith("; positional arguments are not accepted: x")


@pytest.mark.parametrize(
    "args, words",
    [
        (["--direct_num_workers=two"], "--direct_num_workers: invalid int value: 'two'"),
        (["--runner=NoSuchRunner"], "Unexpected pipeline runner: NoSuchRunner"),
    ],
)
def test_bad_values_of_known_options_are_one_line_errors(args, words):
    with pytest.raises(beam_options.BeamArgsError, match=words):
        beam_options.check_args(args)


def test_quiet_options_silence_the_workers_and_later_arguments_win():
    options = beam_options.pipeline_options(["--direct_num_workers=3"]).get_all_options()
    assert options["runner"] == "DirectRunner" and options["direct_num_workers"] == 3
    assert options["direct_running_mode"] == "multi_processing"
    assert options["default_sdk_harness_log_level"] == "WARNING"
    assert options["sdk_harness_log_level_overrides"]["__main__"] == "ERROR"
    loud = beam_options.pipeline_options([], quiet=False).get_all_options()
    assert loud["default_sdk_harness_log_level"] is None
    assert loud["sdk_harness_log_level_overrides"] is None
    flink = beam_options.pipeline_options(["--runner=FlinkRunner"]).get_all_options()
    assert flink["runner"] == "FlinkRunner"


def _notice():
    message = "apitools not found, and bigquery client libraries are not available despite ..."
    return logging.LogRecord("root", logging.WARNING, __file__, 1, message, None, None)


def test_import_notice_is_hidden_unless_verbose(monkeypatch):
    root = logging.getLogger()
    monkeypatch.setattr(root, "filters", [])  # none yet (an entry imported earlier adds one)
    monkeypatch.setenv("SRGAN_VERBOSE", "1")
    beam_options.hide_import_notices()
    assert root.filter(_notice())
    monkeypatch.delenv("SRGAN_VERBOSE")
    beam_options.hide_import_notices()
    assert not root.filter(_notice())
    assert root.filter(logging.LogRecord("root", logging.WARNING, __file__, 1, "real", None, None))
