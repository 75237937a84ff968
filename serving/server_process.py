"""Starts serving.local_server in a subprocess and learns its addresses: the one place that does.

  with server_process.start("exported/srgan", "srgan") as server:
      client = ServingClient(server.rest_address, contract.REST, "srgan")

The server binds free ports (0) and writes them to a small JSON file once both listen, so the
caller never parses its output. TensorFlow-free: scripts and the demo use it without importing TF.
"""

import json
import os
import shutil
import subprocess
import sys
import tempfile
import time

_POLL_SECONDS = 0.1
_STOP_SECONDS = 15.0


class ServerStartError(RuntimeError):
    """The server exited, or did not listen in time; the message ends with its log's tail."""


class LocalServerProcess:
    """A running local server subprocess; stop() (or leaving the `with` block) ends it."""

    def __init__(self, process, rest_address, grpc_address, log_path, work_dir):
        self.process = process
        self.rest_address = rest_address
        self.grpc_address = grpc_address
        self.log_path = log_path
        self._work_dir = work_dir

    def stop(self):
        """SIGTERM (the server stops cleanly), then SIGKILL if it has not exited in time."""
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(_STOP_SECONDS)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        shutil.rmtree(self._work_dir, ignore_errors=True)

    def __enter__(self):
        return self

    def __exit__(self, *exc_info):
        self.stop()


def _tail(path, lines=20):
    try:
        with open(path, encoding="utf-8", errors="replace") as f:
            return "".join(f.readlines()[-lines:]).rstrip()
    except OSError:
        return "(no log)"


def start(
    model_base_path,
    model_name,
    *,
    host="127.0.0.1",
    extra_args=(),
    env=None,
    timeout=120.0,
    log_path=None,
):
    """Starts `python -m serving.local_server` on free ports and waits until both listen.

    Args:
      model_base_path: EXPORT_BASE/NAME (integer version folders).
      model_name: the name clients ask for.
      host: the interface to bind.
      extra_args: more local_server flags (e.g. "--file_system_poll_wait_seconds=0.2").
      env: the subprocess environment (default: this process's).
      timeout: seconds to wait for the ports.
      log_path: where the server's stdout and stderr go (default: a temporary file).

    Returns:
      A LocalServerProcess with `rest_address` and `grpc_address` ("host:port").

    Raises:
      ServerStartError: it exited or did not listen within `timeout` (with its log's tail).
    """
    work_dir = tempfile.mkdtemp(prefix="srgan_server_")
    port_file = os.path.join(work_dir, "ports.json")
    log_path = log_path or os.path.join(work_dir, "server.log")
    command = [
        sys.executable,
        "-m",
        "serving.local_server",
        f"--model_base_path={model_base_path}",
        f"--model_name={model_name}",
        f"--host={host}",
        "--rest_port=0",
        "--grpc_port=0",
        f"--port_file={port_file}",
        *extra_args,
    ]
    with open(log_path, "ab") as log:
        process = subprocess.Popen(
            command, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT, env=env
        )
    deadline = time.monotonic() + timeout
    while not os.path.exists(port_file):
        if process.poll() is not None or time.monotonic() > deadline:
            reason = (
                f"exited with status {process.returncode}"
                if process.poll() is not None
                else f"did not listen within {timeout:.0f} s"
            )
            if process.poll() is None:
                process.kill()
                process.wait()
            message = f"serving.local_server {reason}; log {log_path}:\n{_tail(log_path)}"
            if log_path.startswith(work_dir):
                shutil.rmtree(work_dir, ignore_errors=True)
            raise ServerStartError(message)
        time.sleep(_POLL_SECONDS)
    with open(port_file, encoding="utf-8") as f:
        ports = json.load(f)
    return LocalServerProcess(process, ports["rest"], ports["grpc"], log_path, work_dir)
