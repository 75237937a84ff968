"""Starts the local TF Serving stand-in: one ModelManager behind a REST and a gRPC server."""

import concurrent.futures
import dataclasses
import http.server
import queue
import sys
import threading

import grpc
from absl import flags

from serving import contract, grpc_api, metrics, rest_api
from serving.limits import ServerLimits
from serving.model_manager import ModelManager


@dataclasses.dataclass(frozen=True)
class ServerConfig:
    """Where and what to serve. Port 0 binds a free port (see LocalServer.rest_port/grpc_port).

    `monitoring_path`: where the REST port answers Prometheus scrapes (TF Serving's path by
    default); "" serves no metrics and counts nothing.
    """

    model_base_path: str
    model_name: str
    host: str = "127.0.0.1"
    rest_port: int = 8501
    grpc_port: int = 8500
    poll_seconds: float = 1.0
    limits: ServerLimits = ServerLimits()
    monitoring_path: str = metrics.DEFAULT_PATH

    def __post_init__(self):
        path = self.monitoring_path
        if path and (not path.startswith("/") or path.startswith("/v1/") or "?" in path):
            raise ValueError(
                f"monitoring_path must be empty or an absolute URL path outside /v1/ without a "
                f"query, got {path!r}."
            )


_LIMIT_HELP = {
    "max_body_bytes": "Largest REST body and gRPC request message (bigger: HTTP 413).",
    "max_instances": "Images per request, either signature (more: 400 / INVALID_ARGUMENT).",
    "max_request_pixels": "N*H*W of an upscale_uint8 request (more: 400 / INVALID_ARGUMENT).",
    "max_threads": "Requests computed at once per protocol; more REST connections queue.",
    "read_timeout_seconds": "Time a REST client has to send each request (slower: 408, closed).",
}


def define_limit_flags(flag_values=flags.FLAGS):
    """srgan-serve's flags for ServerLimits: one per field, with the dataclass default.

    A value that is not positive is absl's one-line flag error ("--max_threads must be
    positive"). Defined here rather than in local_server so that tests can parse them into a
    FlagValues of their own without importing the CLI module.
    """
    defaults = ServerLimits()
    for field in dataclasses.fields(ServerLimits):
        default = getattr(defaults, field.name)
        define = flags.DEFINE_float if isinstance(default, float) else flags.DEFINE_integer
        define(field.name, default, _LIMIT_HELP[field.name], flag_values=flag_values)
        flags.register_validator(
            field.name,
            lambda value: value is not None and value > 0,
            f"--{field.name} must be positive",
            flag_values=flag_values,
        )


def limits_from_flags(flag_values=flags.FLAGS):
    """The ServerLimits that parsed define_limit_flags flags ask for."""
    return ServerLimits(
        **{field.name: flag_values[field.name].value for field in dataclasses.fields(ServerLimits)}
    )


class LocalServer:
    """A running server; use as a context manager or call stop()."""

    def __init__(
        self, manager, rest_server, grpc_server, rest_port, grpc_port, host, serving_metrics=None
    ):
        self.manager = manager
        self.metrics = serving_metrics  # metrics.ServingMetrics, or None when disabled
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


class _PooledRestServer(http.server.HTTPServer):
    """http.server with a fixed pool of `max_threads` worker threads, one connection each.

    http.server.ThreadingHTTPServer starts a thread per connection, without bound. Here the
    accepting thread waits for an idle worker before it accepts: connections beyond the pool wait
    in the kernel's listen backlog (`request_queue_size`), costing this process nothing, and are
    served in arrival order once a worker frees; past that backlog the kernel refuses them. A
    client is never turned away with a 503: rest_api's read timeout bounds how long any client
    can hold a worker, so a queued connection waits at most that plus the requests' compute time.
    (A waiting client's own timeout may of course expire first.) An idle keep-alive connection
    holds its worker until its next request or the read timeout, whichever comes first.
    """

    request_queue_size = 64
    _POLL_SECONDS = 0.2  # how often the accepting thread, waiting for a worker, checks for stop

    def __init__(self, address, handler_class, max_threads):
        super().__init__(address, handler_class)
        self._idle_workers = threading.Semaphore(max_threads)
        self._connections = queue.SimpleQueue()
        self._closing = threading.Event()
        self._workers = [
            threading.Thread(target=self._work, name=f"rest-worker-{i}", daemon=True)
            for i in range(max_threads)
        ]
        for worker in self._workers:
            worker.start()

    def get_request(self):
        """Accepts a connection once a worker is idle (OSError, which serve_forever skips, on
        stop)."""
        while not self._idle_workers.acquire(timeout=self._POLL_SECONDS):
            if self._closing.is_set():
                raise OSError("the server is stopping")
        try:
            return super().get_request()
        except BaseException:
            self._idle_workers.release()
            raise

    def process_request(self, request, client_address):
        self._connections.put((request, client_address))

    def handle_error(self, request, client_address):
        """A client that went away or was too slow is no server error worth a traceback."""
        if not isinstance(sys.exc_info()[1], ConnectionError | TimeoutError):
            super().handle_error(request, client_address)

    def _work(self):
        while (item := self._connections.get()) is not None:
            request, client_address = item
            try:
                self.finish_request(request, client_address)
            except Exception:
                self.handle_error(request, client_address)
            finally:
                self.shutdown_request(request)
                self._idle_workers.release()

    def shutdown(self):
        self._closing.set()
        super().shutdown()

    def server_close(self):
        """Closes the listening socket; idle workers exit, busy ones after their connection."""
        super().server_close()
        for _ in self._workers:
            self._connections.put(None)


def _grpc_options(limits):
    """A request message may be as large as a REST body; answers keep the contract's limit."""
    return (
        ("grpc.max_receive_message_length", limits.max_body_bytes),
        ("grpc.max_send_message_length", contract.MAX_MESSAGE_BYTES),
    )


def start(config: ServerConfig):
    """Loads the newest version, starts both servers and the version poller; returns LocalServer.

    A newest version that does not load (still being copied, broken) is logged and retried by
    the poller; the server starts anyway and answers NOT_FOUND until a version loads.
    """
    manager = ModelManager(
        config.model_base_path, config.model_name, config.poll_seconds, limits=config.limits
    )
    manager.try_load_newest()
    manager.start_polling()
    serving_metrics = metrics.ServingMetrics(config.model_name) if config.monitoring_path else None
    grpc_server = grpc.server(
        concurrent.futures.ThreadPoolExecutor(max_workers=config.limits.max_threads),
        options=_grpc_options(config.limits),
    )
    grpc_api.add_services(grpc_server, manager, serving_metrics)
    try:
        grpc_port = grpc_server.add_insecure_port(f"{config.host}:{config.grpc_port}")
        rest_server = _PooledRestServer(
            (config.host, config.rest_port),
            rest_api.make_handler(manager, config.limits, serving_metrics, config.monitoring_path),
            config.limits.max_threads,
        )
    except (OSError, RuntimeError) as e:
        manager.stop()
        raise OSError(
            f"Cannot bind {config.host} (REST port {config.rest_port}, gRPC port "
            f"{config.grpc_port}): {e}"
        ) from None
    grpc_server.start()
    threading.Thread(target=rest_server.serve_forever, name="rest", daemon=True).start()
    return LocalServer(
        manager,
        rest_server,
        grpc_server,
        rest_server.server_address[1],
        grpc_port,
        config.host,
        serving_metrics,
    )
