"""TF Serving's config files: parsed into TF Serving's own message types.

models.config is parsed with the wheel's ModelServerConfig. The wheel lacks the batching and
monitoring protos, so their messages are declared here, field for field (names, numbers, types)
as TF Serving documents them, and the written files are text_format.Parse'd into them: a field
name, nesting or value type that TF Serving would refuse fails here too. References:
  tensorflow_serving/servables/tensorflow/session_bundle_config.proto, message BatchingParameters
  https://github.com/tensorflow/serving/blob/master/tensorflow_serving/servables/tensorflow/session_bundle_config.proto
  tensorflow_serving/config/monitoring_config.proto, MonitoringConfig and PrometheusConfig
  https://github.com/tensorflow/serving/blob/master/tensorflow_serving/config/monitoring_config.proto
"""

import os

import pytest
from google.protobuf import (
    descriptor_pb2,
    descriptor_pool,
    message_factory,
    text_format,
    wrappers_pb2,
)
from tensorflow_serving.config import model_server_config_pb2

from serving import tf_serving_config
from serving.tf_serving_config import BatchingConfig, write_server_configs
from tests.serving.conftest import run_module

_F = descriptor_pb2.FieldDescriptorProto
_INT64_VALUE = ".google.protobuf.Int64Value"
# (name, number, type, label, type_name) as in TF Serving's .proto files.
BATCHING_PARAMETERS = (
    ("max_batch_size", 1, _F.TYPE_MESSAGE, _F.LABEL_OPTIONAL, _INT64_VALUE),
    ("batch_timeout_micros", 2, _F.TYPE_MESSAGE, _F.LABEL_OPTIONAL, _INT64_VALUE),
    ("max_enqueued_batches", 3, _F.TYPE_MESSAGE, _F.LABEL_OPTIONAL, _INT64_VALUE),
    ("num_batch_threads", 4, _F.TYPE_MESSAGE, _F.LABEL_OPTIONAL, _INT64_VALUE),
    ("thread_pool_name", 5, _F.TYPE_MESSAGE, _F.LABEL_OPTIONAL, ".google.protobuf.StringValue"),
    ("allowed_batch_sizes", 6, _F.TYPE_INT64, _F.LABEL_REPEATED, None),
    ("pad_variable_length_inputs", 7, _F.TYPE_BOOL, _F.LABEL_OPTIONAL, None),
    ("enable_large_batch_splitting", 8, _F.TYPE_MESSAGE, _F.LABEL_OPTIONAL,
     ".google.protobuf.BoolValue"),
    ("max_execution_batch_size", 9, _F.TYPE_MESSAGE, _F.LABEL_OPTIONAL, _INT64_VALUE),
)  # fmt: skip
PROMETHEUS_CONFIG = (
    ("enable", 1, _F.TYPE_BOOL, _F.LABEL_OPTIONAL, None),
    ("path", 2, _F.TYPE_STRING, _F.LABEL_OPTIONAL, None),
)
MONITORING_CONFIG = (
    ("prometheus_config", 1, _F.TYPE_MESSAGE, _F.LABEL_OPTIONAL,
     ".tensorflow.serving.PrometheusConfig"),
)  # fmt: skip


def _message_classes():
    """BatchingParameters and MonitoringConfig classes built from the tables above."""
    pool = descriptor_pool.DescriptorPool()
    for dependency in (wrappers_pb2,):
        proto = descriptor_pb2.FileDescriptorProto()
        dependency.DESCRIPTOR.CopyToProto(proto)
        pool.Add(proto)
    file = descriptor_pb2.FileDescriptorProto(
        name="tf_serving_reference.proto",
        package="tensorflow.serving",
        syntax="proto3",
        dependency=["google/protobuf/wrappers.proto"],
    )
    for name, fields in (
        ("BatchingParameters", BATCHING_PARAMETERS),
        ("PrometheusConfig", PROMETHEUS_CONFIG),
        ("MonitoringConfig", MONITORING_CONFIG),
    ):
        message = file.message_type.add(name=name)
        for field_name, number, field_type, label, type_name in fields:
            field = message.field.add(name=field_name, number=number, type=field_type, label=label)
            if type_name:
                field.type_name = type_name
    pool.Add(file)
    return tuple(
        message_factory.GetMessageClass(pool.FindMessageTypeByName(f"tensorflow.serving.{n}"))
        for n in ("BatchingParameters", "MonitoringConfig")
    )


BatchingParameters, MonitoringConfig = _message_classes()


@pytest.fixture
def export_base(tmp_path):
    """Two model folders with SavedModel versions, a LiteRT export, a folder without versions,
    and a stray file."""
    for path in ("srgan/1", "srgan/2", "esrgan/7", "srgan-litert/1", "notes/drafts"):
        (tmp_path / path).mkdir(parents=True)
    for path in ("srgan/1", "srgan/2", "esrgan/7"):
        (tmp_path / path / "saved_model.pb").write_bytes(b"")
    (tmp_path / "srgan-litert/1/model.tflite").write_bytes(b"")
    (tmp_path / "README.txt").write_text("not a model")
    return str(tmp_path)


def _read(path):
    with open(path, encoding="utf-8") as f:
        return f.read()


def test_files_parse_into_tf_servings_messages(export_base):
    batching = BatchingConfig(max_batch_size=8, allowed_batch_sizes=(2, 4, 8))
    paths = write_server_configs(export_base, container_base="/models", batching=batching)
    assert paths == {
        key: os.path.join(export_base, "serving_config", name)
        for key, name in (
            ("models", "models.config"),
            ("batching", "batching.config"),
            ("monitoring", "monitoring.config"),
        )
    }
    models = text_format.Parse(_read(paths["models"]), model_server_config_pb2.ModelServerConfig())
    assert [(c.name, c.base_path, c.model_platform) for c in models.model_config_list.config] == [
        ("esrgan", "/models/esrgan", "tensorflow"),
        ("srgan", "/models/srgan", "tensorflow"),
    ]
    assert all(
        c.model_version_policy.latest.num_versions == 1 for c in models.model_config_list.config
    )
    parsed = text_format.Parse(_read(paths["batching"]), BatchingParameters())
    assert parsed.max_batch_size.value == 8
    assert parsed.batch_timeout_micros.value == batching.batch_timeout_micros
    assert parsed.max_enqueued_batches.value == batching.max_enqueued_batches
    assert parsed.num_batch_threads.value == batching.num_batch_threads
    assert list(parsed.allowed_batch_sizes) == [2, 4, 8]
    assert parsed.pad_variable_length_inputs is False
    monitoring = text_format.Parse(_read(paths["monitoring"]), MonitoringConfig())
    assert monitoring.prometheus_config.enable is True
    assert monitoring.prometheus_config.path == "/monitoring/prometheus/metrics"


def test_every_written_batching_field_is_tf_servings(export_base):
    """The module's field table names only BatchingParameters fields, with their kinds."""
    documented = {name: (ftype, label) for name, _, ftype, label, _ in BATCHING_PARAMETERS}
    kinds = {
        "int64_value": (_F.TYPE_MESSAGE, _F.LABEL_OPTIONAL),
        "repeated_int64": (_F.TYPE_INT64, _F.LABEL_REPEATED),
        "bool": (_F.TYPE_BOOL, _F.LABEL_OPTIONAL),
    }
    for name, kind in tf_serving_config.BATCHING_FIELDS:
        assert documented[name] == kinds[kind], name
    padded = BatchingConfig(pad_variable_length_inputs=True, batch_timeout_micros=0)
    parsed = text_format.Parse(tf_serving_config.batching_text(padded), BatchingParameters())
    assert parsed.pad_variable_length_inputs is True and parsed.batch_timeout_micros.value == 0


def test_host_paths_and_idempotent_rewrite(export_base, tmp_path_factory):
    config_dir = str(tmp_path_factory.mktemp("config"))
    paths = write_server_configs(export_base, config_dir)
    models = text_format.Parse(_read(paths["models"]), model_server_config_pb2.ModelServerConfig())
    assert models.model_config_list.config[1].base_path == os.path.join(export_base, "srgan")
    before = {key: os.stat(path).st_mtime_ns for key, path in paths.items()}
    assert write_server_configs(export_base, config_dir) == paths
    assert {key: os.stat(path).st_mtime_ns for key, path in paths.items()} == before
    os.makedirs(os.path.join(export_base, "edsr", "1"))
    open(os.path.join(export_base, "edsr", "1", "saved_model.pb"), "wb").close()
    write_server_configs(export_base, config_dir, batching=BatchingConfig(max_batch_size=2))
    assert "edsr" in _read(paths["models"]) and "value: 2 " in _read(paths["batching"])
    assert sorted(os.listdir(config_dir)) == sorted(os.path.basename(p) for p in paths.values())


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"max_batch_size": 0}, "max_batch_size"),
        ({"num_batch_threads": 1.5}, "num_batch_threads"),
        ({"batch_timeout_micros": -1}, "batch_timeout_micros"),
        ({"max_enqueued_batches": True}, "max_enqueued_batches"),
        ({"allowed_batch_sizes": (2, 2, 4)}, "allowed_batch_sizes"),
        ({"allowed_batch_sizes": (1, 2)}, "allowed_batch_sizes"),
        ({"pad_variable_length_inputs": "yes"}, "pad_variable_length_inputs"),
    ],
)
def test_bad_batching_values_are_refused(kwargs, match):
    with pytest.raises(ValueError, match=match):
        BatchingConfig(**kwargs)


def test_bad_paths_and_empty_base_are_refused(export_base, tmp_path_factory):
    for path in ("metrics", '/a"b', "/a b", "/v1/models/x"):
        with pytest.raises(ValueError, match="monitoring path"):
            write_server_configs(export_base, monitoring_path=path)
    with pytest.raises(ValueError, match="container_base"):
        write_server_configs(export_base, container_base="models")
    with pytest.raises(ValueError, match="No model folder"):
        write_server_configs(str(tmp_path_factory.mktemp("empty")))


def test_cli(export_base):
    done = run_module(
        "serving.tf_serving_config",
        f"--export_base={export_base}",
        "--container_base=/models",
        "--max_batch_size=2",
        "--allowed_batch_sizes=1,2",
    )
    assert done.returncode == 0, done.stderr
    written = done.stdout.split()
    assert [os.path.basename(p) for p in written] == [
        "models.config",
        "batching.config",
        "monitoring.config",
    ]
    parsed = text_format.Parse(_read(written[1]), BatchingParameters())
    assert list(parsed.allowed_batch_sizes) == [1, 2] and parsed.max_batch_size.value == 2
    refused = run_module(
        "serving.tf_serving_config", f"--export_base={export_base}", "--max_batch_size=0"
    )
    assert refused.returncode != 0 and "max_batch_size" in refused.stderr
