"""The local_server CLI (port 0) picking up a version written by the export CLI.

The server is a fresh process loading the SavedModel, so its answers are also compared with the
trainer's generator here.
"""

import json
import os
import shutil
import subprocess
import sys
import time
import urllib.request

import numpy as np
import pytest

from serving import client_lib, export_lib, model_manager, server_process
from tests.fixtures import make_image
from tests.serving.conftest import (
    GENERATOR_CONFIG,
    MODEL_NAME,
    REPO,
    SCALE,
    TILING,
    generator_uint8,
)


def _served_version(rest_address):
    with urllib.request.urlopen(f"http://{rest_address}/v1/models/{MODEL_NAME}") as response:
        return json.loads(response.read())["model_version_status"][0]["version"]


@pytest.fixture
def local_server(export_dir, tmp_path):
    base = tmp_path / "base"
    shutil.copytree(export_dir, base / MODEL_NAME / "1")
    started = server_process.start(
        str(base / MODEL_NAME), MODEL_NAME, extra_args=["--file_system_poll_wait_seconds=0.2"]
    )
    with started as server:
        yield server, str(base)


def test_new_export_is_picked_up_and_never_overwritten(local_server, model_dir, generator):
    server, base = local_server
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
    assert "unsupported characters" not in exported.stderr  # every input keeps its name
    printed = exported.stdout.strip().splitlines()
    assert printed[0].endswith(os.path.join(base, MODEL_NAME, "2"))
    # ... and TF Serving's server files for the export base, beside the models.
    assert printed[1] == f"TF Serving config: {os.path.join(base, 'serving_config')}"
    with open(os.path.join(base, "serving_config", "models.config")) as f:
        assert f'base_path: "{os.path.join(base, MODEL_NAME)}"' in f.read()
    rest, grpc = server.rest_address, server.grpc_address

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
            generator, GENERATOR_CONFIG, base, MODEL_NAME, version=2, tiling_config=TILING
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


def test_a_server_that_cannot_start_is_reported_with_its_log(tmp_path):
    with pytest.raises(server_process.ServerStartError, match="bogus_flag") as raised:
        server_process.start(str(tmp_path), MODEL_NAME, extra_args=["--bogus_flag=1"])
    assert "exited with status" in str(raised.value)
