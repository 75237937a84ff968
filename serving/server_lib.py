"""Starts the local TF Serving stand-in: one ModelManager behind a REST and a gRPC server."""

import concurrent.futures
import dataclasses
import http.server
import threading

import grpc

from serving import contract, grpc_api, rest_api
from serving.limits import ServerLimits
from serving.model_manager import ModelManager


@dataclasses.dataclass(frozen=True)
class ServerConfig:
    """Where and what to serve. Port 0 binds a free port (see LocalServer.rest_port/grpc_port)."""

    model_base_path: str
    model_name: str
    host: str = "127.0.0.1"
    rest_port: int = 8501
    grpc_port: int = 8500
    poll_seconds: float = 1.0
    limits: ServerLimits = ServerLimits()


class LocalServer:
    """A running server; use as a context manager or call stop()."""

    def __init__(self, manager, rest_server, grpc_server, rest_port, grpc_port, host):
        self.manager = manager
        self._rest_server = rest_server
        self._grpc_server = grpc_server
        self.rest_port = rest_port
        self.grpc_port = grpc_port
        self.host = host

    @property
    def rest_address(self):
        return f"{self.host}:{self.rest_port}"

    @property
    def grpc_address(self):
        return f"{self.host}:{self.grpc_port}"

    def stop(self):
        self.manager.stop()
        self._rest_server.shutdown()
        self._rest_server.server_close()
        self._grpc_server.stop(grace=1).wait()

    def __enter__(self):
        return self

    def __exit__(self, *exc_info):
        self.stop()


class _RestServer(http.server.ThreadingHTTPServer):
    daemon_threads = True
    request_queue_size = 64


def start(config: ServerConfig):
    """Loads the newest version, starts both servers and the version poller; returns LocalServer."""
    manager = ModelManager(
        config.model_base_path, config.model_name, config.poll_seconds, limits=config.limits
    )
    manager.load_newest()
    manager.start_polling()
    grpc_server = grpc.server(
        concurrent.futures.ThreadPoolExecutor(max_workers=config.limits.max_threads),
        options=contract.GRPC_CHANNEL_OPTIONS,
    )
    grpc_api.add_services(grpc_server, manager)
    try:
        grpc_port = grpc_server.add_insecure_port(f"{config.host}:{config.grpc_port}")
        rest_server = _RestServer((config.host, config.rest_port), rest_api.make_handler(manager))
    except (OSError, RuntimeError) as e:
        manager.stop()
        raise OSError(
            f"Cannot bind {config.host} (REST port {config.rest_port}, gRPC port "
            f"{config.grpc_port}): {e}"
        ) from None
    grpc_server.start()
    threading.Thread(target=rest_server.serve_forever, name="rest", daemon=True).start()
    return LocalServer(
        manager, rest_server, grpc_server, rest_server.server_address[1], grpc_port, config.host
    )
