r"""TF Serving's server config files for an export base, in its protobuf text format.

  python -m serving.tf_serving_config --export_base=exported --container_base=/models

writes EXPORT_BASE/serving_config/ (or --config_dir):
  models.config      ModelServerConfig: one `config` per model folder (NAME/<integer version>/),
                     platform "tensorflow", newest version only        --model_config_file
  batching.config    BatchingParameters                              --batching_parameters_file
  monitoring.config  MonitoringConfig, Prometheus on the REST port    --monitoring_config_file

models.config is built with the ModelServerConfig proto of the tensorflow-serving-api wheel. The
wheel does not ship BatchingParameters (servables/tensorflow/session_bundle_config.proto) nor
MonitoringConfig (config/monitoring_config.proto), so those two are written from the field tables
below; tests/serving/test_tf_serving_config.py parses them into message types built from TF
Serving's documented fields.

Every file is replaced atomically (temporary file + rename) and only when its text changed, so
the exporter can call write_server_configs after every export: a TF Serving that polls its
model config (--model_config_file_poll_wait_seconds) sees a complete file, and no change when
there is none.

When batching helps a super-resolution model, and when it does not:
  * A request is usually one image, and an SR forward pass is already large (a convolutional
    network over every output pixel). On a CPU, one image keeps the cores busy; batching mostly
    adds batch_timeout_micros of waiting. It pays on a GPU serving many small images at once
    (thumbnails, tiles), where one image leaves the device idle.
  * serving_default takes a vector [-1] of encoded images, so TF Serving concatenates concurrent
    requests of any size into one batch (each image is still decoded, tiled and upscaled on its
    own in the graph): little to gain, little to lose.
  * upscale_uint8 takes [N, H, W, 3]: TF Serving batches only requests of the same H and W, unless
    pad_variable_length_inputs pads smaller images up to the largest. Padding is wrong for SR: the
    padded zeros change the border pixels of the smaller image's answer (the network sees them as
    context), the answer comes back at the padded size, and every padded pixel costs as much
    compute as a real one. So padding stays off here, and allowed_batch_sizes (which pads the
    batch with whole dummy images) stays empty by default.
"""

import dataclasses
import os
import re
import sys

from absl import app, flags
from google.protobuf import text_format
from tensorflow_serving.config import model_server_config_pb2

MODELS_FILE = "models.config"
BATCHING_FILE = "batching.config"
MONITORING_FILE = "monitoring.config"
DEFAULT_CONFIG_DIR = "serving_config"  # under the export base
# TF Serving's PrometheusExporter::kPrometheusPath (the local server's default too).
DEFAULT_MONITORING_PATH = "/monitoring/prometheus/metrics"

# An absolute URL path that needs no escaping inside a text-format string.
_URL_PATH = re.compile(r"^/[A-Za-z0-9._~!$&'()*+,;=:@%/-]*$")


@dataclasses.dataclass(frozen=True)
class BatchingConfig:
    """TF Serving's BatchingParameters, with defaults for an SR model (see the module docstring).

    Attributes:
      max_batch_size: images per batch. Small: an SR image is already a large computation, and
        a batch answers only when its slowest image is done.
      batch_timeout_micros: how long a batch waits for more requests; 5 ms is noise beside an SR
        request's tens of milliseconds to seconds.
      num_batch_threads: batches computed at once (about the number of devices or core groups).
      max_enqueued_batches: queued batches before TF Serving refuses requests (UNAVAILABLE): a
        bound on the memory and waiting time of a backlog of large images.
      allowed_batch_sizes: sizes a batch is padded up to with dummy images (empty: none);
        increasing, the last one max_batch_size. Each dummy image costs a real one's compute.
      pad_variable_length_inputs: pad upscale_uint8 images of different sizes into one batch. Off:
        padding changes the answer's border pixels and size.
    """

    max_batch_size: int = 4
    batch_timeout_micros: int = 5000
    num_batch_threads: int = 2
    max_enqueued_batches: int = 16
    allowed_batch_sizes: tuple[int, ...] = ()
    pad_variable_length_inputs: bool = False

    def __post_init__(self):
        minimum = {"batch_timeout_micros": 0}
        for name in ("max_batch_size", "batch_timeout_micros", "num_batch_threads"):
            _check_int(name, getattr(self, name), minimum.get(name, 1))
        _check_int("max_enqueued_batches", self.max_enqueued_batches, 1)
        if not isinstance(self.pad_variable_length_inputs, bool):
            raise ValueError(
                "BatchingConfig.pad_variable_length_inputs must be a bool, got "
                f"{self.pad_variable_length_inputs!r}."
            )
        sizes = tuple(self.allowed_batch_sizes)
        object.__setattr__(self, "allowed_batch_sizes", sizes)
        for size in sizes:
            _check_int("allowed_batch_sizes", size, 1)
        if sizes and (
            any(a >= b for a, b in zip(sizes, sizes[1:], strict=False))
            or sizes[-1] != self.max_batch_size
        ):
            raise ValueError(
                f"BatchingConfig.allowed_batch_sizes must increase and end with max_batch_size "
                f"({self.max_batch_size}), got {list(sizes)}."
            )


def _check_int(name, value, minimum):
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ValueError(f"BatchingConfig.{name} must be an integer >= {minimum}, got {value!r}.")


# BatchingParameters fields this module writes, in the proto's order, with how each is written:
# "int64_value" a google.protobuf.Int64Value, "repeated_int64", "bool".
BATCHING_FIELDS = (
    ("max_batch_size", "int64_value"),
    ("batch_timeout_micros", "int64_value"),
    ("max_enqueued_batches", "int64_value"),
    ("num_batch_threads", "int64_value"),
    ("allowed_batch_sizes", "repeated_int64"),
    ("pad_variable_length_inputs", "bool"),
)


def batching_text(batching):
    """BatchingParameters in text format."""
    lines = []
    for name, kind in BATCHING_FIELDS:
        value = getattr(batching, name)
        if kind == "int64_value":
            lines.append(f"{name} {{ value: {value} }}")
        elif kind == "repeated_int64":
            lines += [f"{name}: {size}" for size in value]
        else:
            lines.append(f"{name}: {'true' if value else 'false'}")
    return "\n".join(lines) + "\n"


def monitoring_text(path):
    """MonitoringConfig in text format: Prometheus metrics at `path` on the REST port."""
    check_monitoring_path(path)
    return f'prometheus_config {{\n  enable: true\n  path: "{path}"\n}}\n'


def check_monitoring_path(path):
    if not isinstance(path, str) or not _URL_PATH.match(path) or path.startswith("/v1/"):
        raise ValueError(
            f"The monitoring path must be an absolute URL path outside /v1/ (letters, digits, "
            f"/ and URL punctuation, no quotes or spaces), got {path!r}."
        )


def model_names(export_base):
    """The model folders under `export_base`: those holding an integer version folder with a
    SavedModel (a LiteRT export's `NAME-litert/<v>/model.tflite` is not a TF Serving model)."""
    names = []
    for name in sorted(os.listdir(export_base)):
        folder = os.path.join(export_base, name)
        if name.startswith(".") or not os.path.isdir(folder):
            continue
        if any(
            v.isdigit() and os.path.isfile(os.path.join(folder, v, "saved_model.pb"))
            for v in os.listdir(folder)
        ):
            names.append(name)
    return names


def models_text(export_base, container_base=None):
    """ModelServerConfig in text format: every model folder, newest version, base path in the
    container (`container_base`/NAME) or, without one, the folder's absolute path here."""
    if container_base is not None and not container_base.startswith("/"):
        raise ValueError(f"container_base must be an absolute path, got {container_base!r}.")
    names = model_names(export_base)
    if not names:
        raise ValueError(
            f"No model folder (NAME/<integer version>/) under {export_base}: nothing to serve."
        )
    config = model_server_config_pb2.ModelServerConfig()
    for name in names:
        entry = config.model_config_list.config.add()
        entry.name = name
        entry.base_path = (
            f"{container_base.rstrip('/')}/{name}"
            if container_base is not None
            else os.path.abspath(os.path.join(export_base, name))
        )
        entry.model_platform = "tensorflow"
        entry.model_version_policy.latest.num_versions = 1
    return text_format.MessageToString(config)


def _write_if_changed(path, text):
    """Atomically replaces `path` by `text`, unless it already holds exactly that."""
    try:
        with open(path, encoding="utf-8") as f:
            if f.read() == text:
                return
    except FileNotFoundError:
        pass
    temp = f"{path}.tmp-{os.getpid()}"
    try:
        with open(temp, "w", encoding="utf-8") as f:
            f.write(text)
        os.replace(temp, path)
    finally:
        if os.path.exists(temp):
            os.remove(temp)


def write_server_configs(
    export_base,
    config_dir=None,
    *,
    container_base=None,
    batching=BatchingConfig(),  # noqa: B008 (frozen, so one shared default is safe)
    monitoring_path=DEFAULT_MONITORING_PATH,
):
    """Writes models.config, batching.config and monitoring.config for `export_base`.

    Args:
      export_base: the directory holding one folder per served model (NAME/<version>/).
      config_dir: where the files go (default EXPORT_BASE/serving_config, which is no model
        folder: it holds no integer version).
      container_base: the export base as TF Serving sees it (e.g. "/models" when Docker mounts
        EXPORT_BASE there); None: this machine's absolute paths.
      batching: the BatchingParameters to write.
      monitoring_path: the Prometheus path TF Serving serves on its REST port.

    Returns:
      {"models": path, "batching": path, "monitoring": path}.

    Raises:
      ValueError: nothing to serve under export_base, or a bad path or batching value.
    """
    texts = {
        "models": models_text(export_base, container_base),
        "batching": batching_text(batching),
        "monitoring": monitoring_text(monitoring_path),
    }
    config_dir = config_dir or os.path.join(export_base, DEFAULT_CONFIG_DIR)
    os.makedirs(config_dir, exist_ok=True)
    paths = {
        "models": os.path.join(config_dir, MODELS_FILE),
        "batching": os.path.join(config_dir, BATCHING_FILE),
        "monitoring": os.path.join(config_dir, MONITORING_FILE),
    }
    for key, path in paths.items():
        _write_if_changed(path, texts[key])
    return paths


_FLAGS = flags.FLAGS


def _define_flags():
    """The CLI's flags, defined only when it runs: the exporter imports this module beside its
    own --export_base."""
    defaults = BatchingConfig()
    flags.DEFINE_string("export_base", None, "Directory holding one folder per model.")
    flags.DEFINE_string(
        "config_dir", None, f"Where the files go (default EXPORT_BASE/{DEFAULT_CONFIG_DIR})."
    )
    flags.DEFINE_string(
        "container_base", None, "The export base inside the container (e.g. /models)."
    )
    flags.DEFINE_string(
        "monitoring_path", DEFAULT_MONITORING_PATH, "Prometheus path on TF Serving's REST port."
    )
    flags.DEFINE_integer("max_batch_size", defaults.max_batch_size, "Images per batch.")
    flags.DEFINE_integer(
        "batch_timeout_micros", defaults.batch_timeout_micros, "Wait for a fuller batch (us)."
    )
    flags.DEFINE_integer(
        "num_batch_threads", defaults.num_batch_threads, "Batches computed at once."
    )
    flags.DEFINE_integer(
        "max_enqueued_batches", defaults.max_enqueued_batches, "Queued batches before refusing."
    )
    flags.DEFINE_list(
        "allowed_batch_sizes", [], "Batch sizes to pad up to, increasing, last = max_batch_size."
    )
    flags.DEFINE_bool(
        "pad_variable_length_inputs",
        False,
        "Pad different-size images into one batch (wrong for SR).",
    )
    flags.mark_flag_as_required("export_base")


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"Unexpected arguments: {argv[1:]}")
    try:
        batching = BatchingConfig(
            max_batch_size=_FLAGS.max_batch_size,
            batch_timeout_micros=_FLAGS.batch_timeout_micros,
            num_batch_threads=_FLAGS.num_batch_threads,
            max_enqueued_batches=_FLAGS.max_enqueued_batches,
            allowed_batch_sizes=tuple(int(s) for s in _FLAGS.allowed_batch_sizes),
            pad_variable_length_inputs=_FLAGS.pad_variable_length_inputs,
        )
        paths = write_server_configs(
            _FLAGS.export_base,
            _FLAGS.config_dir,
            container_base=_FLAGS.container_base,
            batching=batching,
            monitoring_path=_FLAGS.monitoring_path,
        )
    except (ValueError, OSError) as e:
        raise app.UsageError(str(e)) from None
    for key in ("models", "batching", "monitoring"):
        print(paths[key])
    sys.stdout.flush()


if __name__ == "__main__":
    _define_flags()
    app.run(main)
