r"""A small stand-in for tensorflow_model_server (REST + gRPC, same API) for development and tests.

  srgan-serve --model_base_path=exported/srgan --model_name=srgan --rest_port=8501 --grpc_port=8500
  (or python -m serving.local_server ...)

Serves the newest version under --model_base_path and picks up newer ones. Port 0 binds a free
port; the bound addresses are printed, and written to --port_file as JSON
{"rest": "HOST:PORT", "grpc": "HOST:PORT"} once both listen (serving.server_process reads it).
The REST port also answers Prometheus scrapes at --monitoring_path (serving.metrics).
"""

import srgan_cli

srgan_cli.quiet_console()  # before TensorFlow and gRPC are imported
srgan_cli.import_tensorflow()  # without its C++ start-up lines

import json  # noqa: E402
import os  # noqa: E402
import signal  # noqa: E402
import threading  # noqa: E402

from absl import app, flags, logging  # noqa: E402

from serving import contract, metrics, server_lib  # noqa: E402

_MODEL_BASE_PATH = flags.DEFINE_string(
    "model_base_path", None, "EXPORT_BASE/NAME, holding integer version folders."
)
_MODEL_NAME = flags.DEFINE_string(
    "model_name", contract.DEFAULT_MODEL_NAME, "Model name clients ask for."
)
_HOST = flags.DEFINE_string("host", "127.0.0.1", "Interface to bind.")
_REST_PORT = flags.DEFINE_integer("rest_port", 8501, "REST port (0: any free port).")
_GRPC_PORT = flags.DEFINE_integer("grpc_port", 8500, "gRPC port (0: any free port).")
_POLL_SECONDS = flags.DEFINE_float(
    "file_system_poll_wait_seconds", 1.0, "How often to look for a newer version."
)
_MONITORING_PATH = flags.DEFINE_string(
    "monitoring_path",
    metrics.DEFAULT_PATH,
    "REST path of the Prometheus metrics (TF Serving's monitoring.config path); empty: none.",
)
_PORT_FILE = flags.DEFINE_string(
    "port_file", None, "Write the bound addresses here as JSON once both servers listen."
)

server_lib.define_limit_flags()


def _write_port_file(path, server):
    temp = f"{path}.tmp-{os.getpid()}"
    with open(temp, "w", encoding="utf-8") as f:
        json.dump({"rest": server.rest_address, "grpc": server.grpc_address}, f)
    os.replace(temp, path)  # atomic: a reader sees the whole file or none


def _config():
    """The ServerConfig the flags ask for (ValueError: a flag value it refuses)."""
    return server_lib.ServerConfig(
        model_base_path=_MODEL_BASE_PATH.value,
        model_name=_MODEL_NAME.value,
        host=_HOST.value,
        rest_port=_REST_PORT.value,
        grpc_port=_GRPC_PORT.value,
        poll_seconds=_POLL_SECONDS.value,
        limits=server_lib.limits_from_flags(),
        monitoring_path=_MONITORING_PATH.value,
    )


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"Unexpected arguments: {argv[1:]}")
    try:
        config = _config()
    except ValueError as e:
        raise app.UsageError(str(e)) from None
    try:
        server = server_lib.start(config)
    except OSError as e:
        raise app.UsageError(f"Cannot start serving: {e}") from None
    if server.manager.version is None:
        logging.warning("No version under %s yet; waiting for one.", config.model_base_path)
    print(f"serving REST on {server.rest_address} gRPC on {server.grpc_address}", flush=True)
    if _PORT_FILE.value:
        _write_port_file(_PORT_FILE.value, server)
    stopped = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stopped.set())
    try:
        stopped.wait()
    except KeyboardInterrupt:
        pass
    server.stop()


def run():
    """The `srgan-serve` console script."""
    flags.mark_flag_as_required("model_base_path")
    app.run(main)


if __name__ == "__main__":
    run()
