r"""A small stand-in for tensorflow_model_server (REST + gRPC, same API) for development and tests.

  python -m serving.local_server --model_base_path=exported/srgan --model_name=srgan \
      --rest_port=8501 --grpc_port=8500

Serves the newest version under --model_base_path and picks up newer ones. Port 0 binds a free
port; the bound ports are printed on one line:
  serving REST on 127.0.0.1:PORT gRPC on 127.0.0.1:PORT
"""

import signal
import threading

from absl import app, flags, logging

from serving import contract, server_lib

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


def main(argv):
    del argv
    config = server_lib.ServerConfig(
        model_base_path=_MODEL_BASE_PATH.value,
        model_name=_MODEL_NAME.value,
        host=_HOST.value,
        rest_port=_REST_PORT.value,
        grpc_port=_GRPC_PORT.value,
        poll_seconds=_POLL_SECONDS.value,
    )
    try:
        server = server_lib.start(config)
    except OSError as e:
        raise app.UsageError(f"Cannot start serving: {e}") from None
    if server.manager.version is None:
        logging.warning("No version under %s yet; waiting for one.", config.model_base_path)
    print(f"serving REST on {server.rest_address} gRPC on {server.grpc_address}", flush=True)
    stopped = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stopped.set())
    try:
        stopped.wait()
    except KeyboardInterrupt:
        pass
    server.stop()


if __name__ == "__main__":
    flags.mark_flag_as_required("model_base_path")
    app.run(main)
