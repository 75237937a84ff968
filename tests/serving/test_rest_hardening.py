"""The REST transport under hostile or heavy requests (issue 14): timeouts, framing, limits, memory."""

import json
import os
import time
import urllib.request

import numpy as np
import pytest
import tensorflow as tf

from serving import contract, export_lib
from serving import server_process as server_process_lib
from serving.serving_module import TilingConfig
from tests.fixtures import make_image
from tests.serving.conftest import SCALE, PeakMemory

BIG_MODEL = "big_sr"
BIG_SIDE = 512  # LR side of the memory request: a 2048x2048 answer of 4.2 M pixels.


@pytest.fixture(scope="module")
def big_export(model_dir, tmp_path_factory):
    """The session's tiny generator exported with room for one BIG_SIDE^2 image."""
    base = str(tmp_path_factory.mktemp("big_export"))
    tiling = TilingConfig(tile_size=128, overlap=8, max_input_pixels=BIG_SIDE * BIG_SIDE)
    export_dir, _ = export_lib.export_from_model_dir(
        model_dir, base, BIG_MODEL, tiling_config=tiling
    )
    return base, export_dir


@pytest.fixture(scope="module")
def big_server(big_export):
    base, _ = big_export
    with server_process_lib.start(os.path.join(base, BIG_MODEL), BIG_MODEL, timeout=180) as running:
        running.peak = PeakMemory(running.process.pid)
        yield running


def test_a_large_tensor_answer_is_streamed_in_bounded_memory(big_server, big_export):
    lr = make_image(BIG_SIDE, BIG_SIDE, seed=3)
    body = json.dumps(
        {"signature_name": contract.TENSOR_SIGNATURE, "instances": [lr.tolist()]}
    ).encode()
    url = f"http://{big_server.rest_address}/v1/models/{BIG_MODEL}:predict"
    big_server.peak.reset()
    start = time.monotonic()
    with urllib.request.urlopen(urllib.request.Request(url, data=body), timeout=120) as response:
        assert response.status == 200
        answer = response.read()
    seconds = time.monotonic() - start
    growth = big_server.peak.growth_mib()
    print(
        f"\n{len(body) / 1e6:.1f} MB request, {len(answer) / 1e6:.1f} MB answer in {seconds:.1f} s;"
        f" server peak growth {growth:.0f} MiB"
    )
    sr = np.asarray(json.loads(answer)["predictions"], np.uint8)
    assert sr.shape == (1, BIG_SIDE * SCALE, BIG_SIDE * SCALE, 3)
    loaded = tf.saved_model.load(big_export[1])
    expected = loaded.signatures[contract.TENSOR_SIGNATURE](lr_image=tf.constant(lr[np.newaxis]))
    np.testing.assert_array_equal(sr, expected[contract.TENSOR_OUTPUT].numpy())
    assert growth < 300, f"the server grew by {growth:.0f} MiB for one request"
