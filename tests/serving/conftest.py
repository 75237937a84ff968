"""Shared serving fixtures: a tiny trained-looking generator, its export, and a running server."""

import os
import subprocess
import sys

import keras
import numpy as np
import pytest
import tensorflow as tf

from serving import export_lib, server_lib
from serving import server_process as server_process_lib
from serving.serving_module import TilingConfig
from trainer import generator_store, value_range

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
MODEL_NAME = "tiny_sr"
SCALE = 4
# Small tiles so that a 70x50 test image takes the tiled path; the limit makes 120x100 too big.
TILING = TilingConfig(tile_size=32, overlap=8, max_input_pixels=100 * 100)
GENERATOR_CONFIG = generator_store.GeneratorConfig(scale=SCALE, num_blocks=1, channels=8)


def run_module(*args, timeout=120):
    """Runs `python -m <args>` from the repository root; returns the CompletedProcess."""
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"}
    return subprocess.run(
        [sys.executable, "-m", *args],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def generator_uint8(generator, lr_uint8):
    """The trainer generator's output for a uint8 batch, converted like the export does."""
    sr = generator(value_range.lr_from_uint8(np.asarray(lr_uint8)), training=False)
    return value_range.hr_to_uint8(sr).numpy()


def make_model_dir(model_dir):
    config = GENERATOR_CONFIG
    generator = generator_store.build_generator(config)
    # Random BN statistics, so that the test would notice a model exported in training mode.
    rng = np.random.default_rng(1)
    for layer in generator.layers:
        if isinstance(layer, keras.layers.BatchNormalization):
            layer.moving_mean.assign(rng.normal(0, 0.1, layer.moving_mean.shape))
    generator_store.write_config(model_dir, config)
    tf.train.CheckpointManager(
        tf.train.Checkpoint(generator=generator),
        generator_store.phase_dir(model_dir, generator_store.PRETRAIN),
        3,
    ).save()
    return model_dir


@pytest.fixture(scope="session")
def model_dir(tmp_path_factory):
    return make_model_dir(str(tmp_path_factory.mktemp("model_dir")))


@pytest.fixture(scope="session")
def generator(model_dir):
    return generator_store.load_generator(model_dir)[0]


@pytest.fixture(scope="session")
def export_base(model_dir, tmp_path_factory):
    base = str(tmp_path_factory.mktemp("exported"))
    export_lib.export_from_model_dir(model_dir, base, MODEL_NAME, tiling_config=TILING)
    return base


@pytest.fixture(scope="session")
def export_dir(export_base):
    return os.path.join(export_base, MODEL_NAME, "1")


@pytest.fixture(scope="session")
def loaded(export_dir):
    return tf.saved_model.load(export_dir)


@pytest.fixture(scope="session")
def server(export_base):
    config = server_lib.ServerConfig(
        model_base_path=os.path.join(export_base, MODEL_NAME),
        model_name=MODEL_NAME,
        rest_port=0,
        grpc_port=0,
        poll_seconds=0.2,
    )
    with server_lib.start(config) as running:
        yield running


class PeakMemory:
    """The peak resident memory (VmHWM) of a process, reset before each measured request.

    Writing "5" to /proc/PID/clear_refs resets VmHWM to the current RSS (Linux >= 4.0), so
    `growth_mib()` is how far one request pushed the server's memory above where it stood.
    """

    def __init__(self, pid):
        self._pid = pid
        self._start_kib = None

    def _field_kib(self, name):
        with open(f"/proc/{self._pid}/status", encoding="ascii") as f:
            for line in f:
                if line.startswith(name + ":"):
                    return int(line.split()[1])
        raise KeyError(name)

    def reset(self):
        with open(f"/proc/{self._pid}/clear_refs", "w", encoding="ascii") as f:
            f.write("5")
        self._start_kib = self._field_kib("VmRSS")

    def growth_mib(self):
        return (self._field_kib("VmHWM") - self._start_kib) / 1024


@pytest.fixture(scope="session")
def server_process(export_base):
    """The local server in its own process (serving.server_process), with `.peak` (PeakMemory)."""
    with server_process_lib.start(
        os.path.join(export_base, MODEL_NAME), MODEL_NAME, timeout=180
    ) as running:
        running.peak = PeakMemory(running.process.pid)
        yield running
