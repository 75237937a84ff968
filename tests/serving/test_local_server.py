"""The local_server CLI (port 0) picking up a version written by the export CLI.

The server is a fresh process loading the SavedModel, so its answers are also compared with the
trainer's generator here.
"""

import json
import os
import select
import shutil
import signal
import subprocess
import sys
import time
import urllib.request

import numpy as np
import pytest

from serving import client_lib, export_lib, model_manager
from tests.fixtures import make_image
from tests.serving.conftest import MODEL_NAME, REPO, SCALE, TILING, generator_uint8


def _read_ports(process, timeout=60):
    """Reads the 'serving REST on H:P gRPC on H:P' line; returns (rest, grpc) addresses."""
    deadline = time.time() + timeout
    while time.time() < deadline:
        if select.select([process.stdout], [], [], 1)[0]:
            line = process.stdout.readline()
            if line.startswith("serving REST on "):
                words = line.split()
                return words[3], words[6]
            assert line or process.poll() is None, "local_server exited"
    raise AssertionError("local_server did not print its ports")


def _served_version(rest_address):
    with urllib.request.urlopen(f"http://{rest_address}/v1/models/{MODEL_NAME}") as response:
        return json.loads(response.read())["model_version_status"][0]["version"]


@pytest.fixture
def server_process(export_dir, tmp_path):
    base = tmp_path / "base"
    shutil.copytree(export_dir, base / MODEL_NAME / "1")
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "serving.local_server",
            f"--model_base_path={base / MODEL_NAME}",
            f"--model_name={MODEL_NAME}",
            "--rest_port=0",
            "--grpc_port=0",
            "--file_system_poll_wait_seconds=0.2",
        ],
        cwd=REPO,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
        env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"},
    )
    yield process, str(base)
    process.send_signal(signal.SIGTERM)
    process.wait(timeout=30)


def test_new_export_is_picked_up_and_never_overwritten(server_process, model_dir, generator):
    process, base = server_process
    # Export while the server starts: both pay TensorFlow's import time at once.
    exported = subprocess.run(
        [
            sys.executable,
            "-m",
            "serving.export",
            f"--model_dir={model_dir}",
            f"--export_base={base}",
            f"--model_name={MODEL_NAME}",
            "--tile_size=32",
            "--tile_overlap=8",
            "--max_input_pixels=10000",
        ],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert exported.returncode == 0, exported.stderr[-2000:]
    assert exported.stdout.strip().endswith(os.path.join(base, MODEL_NAME, "2"))
    rest, grpc = _read_ports(process)

    deadline = time.time() + 30
    while _served_version(rest) != "2" and time.time() < deadline:
        time.sleep(0.2)
    assert _served_version(rest) == "2"
    lr = make_image(16, 12)[np.newaxis]
    with client_lib.ServingClient(rest, client_lib.REST, MODEL_NAME, version=2) as client:
        sr = client.upscale_array(lr)
    assert sr.shape == (1, 16 * SCALE, 12 * SCALE, 3)
    assert np.abs(sr.astype(int) - generator_uint8(generator, lr)).max() <= 1
    with client_lib.ServingClient(grpc, client_lib.GRPC, MODEL_NAME, version=1) as client:
        with pytest.raises(client_lib.ModelNotFoundError):
            client.upscale_array(lr)

    with pytest.raises(FileExistsError, match="never overwritten"):
        export_lib.export_generator(
            generator, SCALE, base, MODEL_NAME, version=2, tiling_config=TILING
        )
    assert sorted(os.listdir(os.path.join(base, MODEL_NAME))) == ["1", "2"]


def test_a_broken_new_version_keeps_the_old_one_served_and_is_not_reloaded(export_dir, tmp_path):
    base = tmp_path / MODEL_NAME
    shutil.copytree(export_dir, base / "1")
    manager = model_manager.ModelManager(str(base), MODEL_NAME, warmup=False)
    assert manager.load_newest() == 1
    (base / "2").mkdir()
    (base / "2" / "saved_model.pb").write_bytes(b"not a SavedModel")
    with pytest.raises(Exception):  # noqa: B017 - whatever TF raises for a corrupt SavedModel
        manager.load_newest()
    assert manager.load_newest() == 1  # remembered as broken: no second load attempt
    assert manager.version == 1
