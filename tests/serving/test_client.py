"""serving.client_lib and the serving.client CLI against the in-process local server."""

import io
import os
import socket

import numpy as np
import pytest
import tensorflow as tf
from PIL import Image

from data_prep import images
from serving import client_errors, client_lib, contract, upscale_files
from tests.fixtures import make_image, png_bytes
from tests.serving.conftest import MODEL_NAME, SCALE, run_module

LR = make_image(20, 24, seed=11)


def _in_process(loaded, image):
    out = loaded.signatures[contract.TENSOR_SIGNATURE](lr_image=tf.constant(image[np.newaxis]))
    return out[contract.TENSOR_OUTPUT][0].numpy()


def _address(server, protocol):
    return server.rest_address if protocol == contract.REST else server.grpc_address


@pytest.mark.parametrize("protocol", contract.PROTOCOLS)
def test_client_round_trips_equal_in_process(server, loaded, protocol):
    expected = _in_process(loaded, LR)
    with client_lib.ServingClient(_address(server, protocol), protocol, MODEL_NAME) as client:
        assert client.status()["model_version_status"][0]["version"] == "1"
        png = client.upscale_encoded([png_bytes(LR)])[0]
        np.testing.assert_array_equal(np.asarray(Image.open(io.BytesIO(png))), expected)
        sr = client.upscale_array(LR[np.newaxis])
        assert sr.shape == (1, 20 * SCALE, 24 * SCALE, 3) and sr.dtype == np.uint8
        np.testing.assert_array_equal(sr[0], expected)


@pytest.mark.parametrize("protocol", contract.PROTOCOLS)
def test_client_errors_say_what_happened(server, protocol):
    address = _address(server, protocol)
    with client_lib.ServingClient(address, protocol, "no_such_model") as client:
        with pytest.raises(client_errors.ModelNotFoundError, match="no_such_model"):
            client.upscale_encoded([png_bytes(LR)])
    with client_lib.ServingClient(address, protocol, MODEL_NAME) as client:
        with pytest.raises(client_errors.BadRequestError, match="pixel limit"):
            client.upscale_encoded([png_bytes(make_image(120, 100))])
        with pytest.raises(client_errors.BadRequestError, match="image"):
            client.upscale_encoded([b"not an image"])
        assert len(client.upscale_encoded([png_bytes(LR)])) == 1  # Still serving.


def _closed_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.parametrize("protocol", contract.PROTOCOLS)
def test_connection_refused_is_retried_then_reported(protocol):
    address = f"127.0.0.1:{_closed_port()}"
    with client_lib.ServingClient(address, protocol, MODEL_NAME, timeout=5, retries=1) as client:
        with pytest.raises(client_errors.ServerUnavailableError, match="Is the server running"):
            client.upscale_encoded([png_bytes(LR)])


def test_cli_upscales_a_folder_over_rest(server, loaded, tmp_path):
    inputs = tmp_path / "lr"
    inputs.mkdir()
    (inputs / "a.png").write_bytes(png_bytes(LR))
    Image.fromarray(LR).convert("L").save(inputs / "b.bmp")
    result = run_module(
        "serving.client",
        f"--server={server.rest_address}",
        "--protocol=rest",
        f"--model_name={MODEL_NAME}",
        f"--input={inputs}",
        f"--output={tmp_path / 'sr'}",
    )
    assert result.returncode == 0, result.stderr[-2000:]
    assert sorted(os.listdir(tmp_path / "sr")) == ["a.png", "b.png"]
    np.testing.assert_array_equal(
        np.asarray(Image.open(tmp_path / "sr" / "a.png")), _in_process(loaded, LR)
    )
    assert Image.open(tmp_path / "sr" / "b.png").size == (24 * SCALE, 20 * SCALE)


def test_cli_reports_unknown_model_without_traceback(server, tmp_path):
    (tmp_path / "a.png").write_bytes(png_bytes(LR))
    result = run_module(
        "serving.client",
        f"--server={server.rest_address}",
        "--protocol=rest",
        "--model_name=nope",
        f"--input={tmp_path / 'a.png'}",
        f"--output={tmp_path / 'sr.png'}",
    )
    assert result.returncode == 1
    assert "error: Not found" in result.stderr and "Traceback" not in result.stderr


@pytest.mark.parametrize("signature", contract.SIGNATURES)
def test_a_16_bit_png_is_sent_as_the_one_decode_rule_reads_it(server, loaded, tmp_path, signature):
    path = str(tmp_path / "gray16.png")
    gray16 = (make_image(20, 24, seed=5)[..., 0].astype(np.uint16) * 257) ^ 0x55
    Image.fromarray(gray16, mode="I;16").save(path)
    with client_lib.ServingClient(server.rest_address, contract.REST, MODEL_NAME) as client:
        size = upscale_files.upscale_file(client, path, str(tmp_path / "sr.png"), signature)
    assert size == (24 * SCALE, 20 * SCALE)
    np.testing.assert_array_equal(
        np.asarray(Image.open(tmp_path / "sr.png")), _in_process(loaded, images.load_rgb(path))
    )


def test_cli_refuses_positional_arguments(tmp_path):
    result = run_module(
        "serving.client", f"--input={tmp_path}", f"--output={tmp_path / 'sr'}", "extra"
    )
    assert result.returncode != 0 and "Unexpected arguments: ['extra']" in result.stderr


def test_cli_reports_an_unreadable_image_in_one_line(tmp_path):
    (tmp_path / "a.png").write_bytes(b"not an image")
    result = run_module(
        "serving.client",
        "--server=127.0.0.1:1",
        f"--input={tmp_path / 'a.png'}",
        f"--output={tmp_path / 'sr.png'}",
    )
    assert result.returncode == 1 and "Traceback" not in result.stderr
    assert result.stderr.strip().startswith("error:") and "a.png" in result.stderr


def test_folder_inputs_that_would_write_the_same_output_are_refused(tmp_path):
    for name in ("a.png", "a.jpg", "b.png"):
        (tmp_path / name).write_bytes(b"")
    with pytest.raises(ValueError, match=r"same output \['a.png'\]"):
        upscale_files.plan(str(tmp_path), str(tmp_path / "out"))
