"""The REST transport under slow, malformed, oversized and heavy requests (issue 14).

Each case sends what broke the old server (raw bytes on a socket where urllib would not send
them) and asserts the status, that the connection is closed when its bytes cannot be trusted,
and that the server answers a good request afterwards.
"""

import concurrent.futures
import http.client
import json
import os
import socket
import threading
import time
import urllib.request

import grpc
import numpy as np
import pytest
import tensorflow as tf
from absl import flags
from tensorflow_serving.apis import predict_pb2, prediction_service_pb2_grpc

from serving import contract, export_lib, rest_api, server_lib
from serving import server_process as server_process_lib
from serving.limits import MIB, ServerLimits
from serving.serving_module import TilingConfig
from tests.fixtures import make_image
from tests.serving.conftest import MODEL_NAME, SCALE, PeakMemory

PREDICT = f"/v1/models/{MODEL_NAME}:predict"
LIMITS = ServerLimits(
    max_body_bytes=1 * MIB, max_instances=2, max_threads=2, read_timeout_seconds=1.0
)
LR = make_image(8, 6, seed=5)
GOOD = json.dumps({"signature_name": contract.TENSOR_SIGNATURE, "instances": [LR.tolist()]})


@pytest.fixture(scope="module")
def strict(export_base):
    """An in-process server with small limits: 1 MiB bodies, 2 images, 2 workers, 1 s to send."""
    config = server_lib.ServerConfig(
        model_base_path=os.path.join(export_base, MODEL_NAME),
        model_name=MODEL_NAME,
        rest_port=0,
        grpc_port=0,
        limits=LIMITS,
    )
    with server_lib.start(config) as running:
        yield running


def _connect(server):
    host, port = server.rest_address.rsplit(":", 1)
    return socket.create_connection((host, int(port)), timeout=10)


def _answer(sock):
    """(status, JSON body, whether the server then closed the connection)."""
    response = http.client.HTTPResponse(sock)
    response.begin()
    body = json.loads(response.read())
    sock.settimeout(LIMITS.read_timeout_seconds / 3)  # a closing server closes at once
    try:
        closed = sock.recv(1) == b""
    except TimeoutError:
        closed = False
    except ConnectionResetError:
        closed = True
    return response.status, body, closed


def _send(server, data):
    with _connect(server) as sock:
        sock.sendall(data)
        return _answer(sock)


def _post_head(length_header="", extra=""):
    return f"POST {PREDICT} HTTP/1.1\r\nHost: x\r\n{length_header}{extra}\r\n".encode()


def _assert_serves(server, loaded):
    """A good request on a fresh connection gets the signature's pixels."""
    request = urllib.request.Request(f"http://{server.rest_address}{PREDICT}", GOOD.encode())
    with urllib.request.urlopen(request, timeout=60) as response:
        sr = np.asarray(json.loads(response.read())["predictions"], np.uint8)
    expected = loaded.signatures[contract.TENSOR_SIGNATURE](lr_image=tf.constant(LR[None]))
    np.testing.assert_array_equal(sr, expected[contract.TENSOR_OUTPUT].numpy())


@pytest.mark.parametrize(
    "sent",
    [
        _post_head("Content-Length: 1000\r\n") + b'{"instances": [',  # 15 of 1000 body bytes
        f"POST {PREDICT} HTTP/1.1\r\nHost: x\r\nContent-Le".encode(),  # half the headers
    ],
    ids=["short_body", "half_headers"],
)
def test_a_client_that_stops_sending_gets_408_and_is_closed(strict, loaded, sent):
    start = time.monotonic()
    status, body, closed = _send(strict, sent)
    waited = time.monotonic() - start
    assert (status, closed) == (408, True), body
    assert LIMITS.read_timeout_seconds * 0.9 <= waited < LIMITS.read_timeout_seconds + 3
    _assert_serves(strict, loaded)


def test_a_client_that_trickles_bytes_is_cut_at_the_deadline(strict):
    """One byte every 0.3 s would pass any per-read timeout; the deadline covers the request."""
    with _connect(strict) as sock:
        sock.sendall(_post_head("Content-Length: 100\r\n"))
        start = time.monotonic()
        try:
            for _ in range(20):
                sock.sendall(b" ")
                time.sleep(0.3)
        except OSError:
            pass  # closed by the server while trickling
        status, _, closed = _answer(sock)
    assert (status, closed) == (408, True)
    assert time.monotonic() - start < LIMITS.read_timeout_seconds + 3


def test_workers_are_a_fixed_pool_and_excess_connections_wait(strict, loaded):
    """20 silent connections start no thread; with both workers held by two of them, a good
    request waits in the accept queue until the read timeout frees a worker, then is served."""
    threads = threading.active_count()
    silent = [_connect(strict) for _ in range(20)]
    time.sleep(0.3)
    assert threading.active_count() == threads
    for sock in silent[LIMITS.max_threads :]:  # queued behind the good request: let them go
        sock.close()
    start = time.monotonic()
    _assert_serves(strict, loaded)
    waited = time.monotonic() - start
    for sock in silent[: LIMITS.max_threads]:
        sock.close()
    assert 0.5 * LIMITS.read_timeout_seconds <= waited < LIMITS.read_timeout_seconds + 3


def test_chunked_bodies_are_refused_with_501_and_closed(strict, loaded):
    chunked = _post_head("", "Transfer-Encoding: chunked\r\n") + b"5\r\nhello\r\n0\r\n\r\n"
    status, body, closed = _send(strict, chunked)
    assert (status, closed) == (501, True)
    assert "content-length" in body["error"].lower()
    _assert_serves(strict, loaded)


def test_a_post_without_content_length_gets_411_and_is_closed(strict, loaded):
    status, body, closed = _send(strict, _post_head() + GOOD.encode())
    assert (status, closed) == (411, True), body
    _assert_serves(strict, loaded)


def test_conflicting_content_lengths_are_a_400_and_closed(strict):
    head = _post_head("Content-Length: 2\r\nContent-Length: 3\r\n")
    status, body, closed = _send(strict, head + b"{}x")
    assert (status, closed) == (400, True)
    assert "content-length" in body["error"].lower()


@pytest.mark.parametrize("expect", ["", "Expect: 100-continue\r\n"])
def test_a_body_over_max_body_bytes_is_a_413_before_it_is_read(strict, loaded, expect):
    head = _post_head(f"Content-Length: {100 * 1000 * 1000}\r\n", expect)
    status, body, closed = _send(strict, head + b"0123456789")
    assert (status, closed) == (413, True)
    assert str(LIMITS.max_body_bytes) in body["error"]
    _assert_serves(strict, loaded)


def test_more_instances_than_max_instances_is_a_400(strict, loaded):
    request = {"signature_name": contract.TENSOR_SIGNATURE, "instances": [LR.tolist()] * 3}
    data = json.dumps(request).encode()
    status, body, closed = _send(strict, _post_head(f"Content-Length: {len(data)}\r\n") + data)
    assert (status, closed) == (400, False)
    assert "at most 2" in body["error"]
    _assert_serves(strict, loaded)


BAD_JSON = {
    "deep_nesting": (b"[" * 100_000 + b"]" * 100_000, "nested too deeply"),
    "lone_surrogate": (b'{"instances": ["\\ud800"]}', "unicode"),
    "signature_not_a_string": (b'{"signature_name": [1], "instances": [1]}', "string"),
}


@pytest.mark.parametrize("case", sorted(BAD_JSON))
def test_malformed_json_is_a_400_not_a_500(server, loaded, case):
    data, want = BAD_JSON[case]
    status, body, _ = _send(server, _post_head(f"Content-Length: {len(data)}\r\n") + data)
    assert status == 400, body
    assert want in body["error"].lower()
    _assert_serves(server, loaded)


@pytest.mark.parametrize("instances", [[1, 2], [None]], ids=["ints_as_bytes", "null"])
def test_values_the_signature_cannot_take_are_a_400(server, instances):
    data = json.dumps({"instances": instances}).encode()
    status, body, _ = _send(server, _post_head(f"Content-Length: {len(data)}\r\n") + data)
    assert status == 400, body


def test_every_tf_serving_code_maps_to_its_http_status():
    def status(code):
        return rest_api.http_status(rest_api.RequestError(code, "x"))

    assert [status(c) for c in ("INVALID_ARGUMENT", "NOT_FOUND", "RESOURCE_EXHAUSTED")] == [
        400,
        404,
        429,
    ]
    assert (status("CANCELLED"), status("INTERNAL"), status("SOMETHING_NEW")) == (499, 500, 400)


def _tcp_pair(listener):
    client = socket.create_connection(listener.getsockname())
    return client, listener.accept()[0]


def test_client_gone_on_a_real_tcp_connection():
    with socket.create_server(("127.0.0.1", 0)) as listener:
        client, server_side = _tcp_pair(listener)
        with server_side:
            assert not rest_api.client_gone(server_side)  # connected, silent
            client.sendall(b"GET / HTTP/1.1\r\n")
            time.sleep(0.05)
            assert not rest_api.client_gone(server_side)  # pipelined bytes: still there
            assert server_side.recv(100) == b"GET / HTTP/1.1\r\n"  # peeking consumed nothing
            client.close()
            time.sleep(0.05)
            assert rest_api.client_gone(server_side)  # closed by the client
        client, server_side = _tcp_pair(listener)
        with server_side:
            client.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\1\0\0\0\0\0\0\0")
            client.close()  # linger 0: a reset, not a clean close
            time.sleep(0.05)
            assert rest_api.client_gone(server_side)


def test_a_grpc_message_over_max_body_bytes_is_resource_exhausted(strict):
    request = predict_pb2.PredictRequest()
    request.model_spec.name = MODEL_NAME
    request.inputs[contract.BYTES_INPUT].CopyFrom(tf.make_tensor_proto([b"x" * (2 * MIB)]))
    with grpc.insecure_channel(strict.grpc_address, contract.GRPC_CHANNEL_OPTIONS) as channel:
        stub = prediction_service_pb2_grpc.PredictionServiceStub(channel)
        with pytest.raises(grpc.RpcError) as error:
            stub.Predict(request, timeout=30)
    assert error.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED


@pytest.mark.parametrize("field", [f.name for f in ServerLimits.__dataclass_fields__.values()])
@pytest.mark.parametrize("value", ["0", "-2"])
def test_limit_flags_refuse_non_positive_values(field, value):
    flag_values = flags.FlagValues()
    server_lib.define_limit_flags(flag_values)
    with pytest.raises(flags.IllegalFlagValueError, match=f"--{field} must be positive"):
        flag_values(["srgan-serve", f"--{field}={value}"])


def test_limit_flags_default_to_the_dataclass_and_reach_the_limits():
    flag_values = flags.FlagValues()
    server_lib.define_limit_flags(flag_values)
    flag_values(["srgan-serve", "--max_threads=3", "--read_timeout_seconds=2.5"])
    assert server_lib.limits_from_flags(flag_values) == ServerLimits(
        max_threads=3, read_timeout_seconds=2.5
    )


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


def _signature_output(export_dir, lr):
    loaded = tf.saved_model.load(export_dir)
    out = loaded.signatures[contract.TENSOR_SIGNATURE](lr_image=tf.constant(lr[np.newaxis]))
    return out[contract.TENSOR_OUTPUT].numpy()


def _pixels(answer, shape):
    """The numbers of a {"predictions": [...]} answer, in order (json.loads would take seconds
    over 4 M pixel lists; test_uint8_answers_are_json_of_the_same_values checks the JSON)."""
    prefix = b'{"predictions": '
    assert answer.startswith(prefix + b"[" * len(shape)) and answer.endswith(b"]}")
    numbers = answer[len(prefix) : -1].translate(bytes.maketrans(b"[],", b"   ")).decode()
    values = np.fromstring(numbers, dtype=np.int64, sep=" ")
    assert values.size == np.prod(shape) and values.min() >= 0 and values.max() <= 255
    return values.astype(np.uint8).reshape(shape)


def test_a_large_tensor_answer_is_streamed_in_bounded_memory(big_export):
    """The old server grew by 622 MiB for this request (50 M-entry lists and one huge string)."""
    base, export_dir = big_export
    lr = make_image(BIG_SIDE, BIG_SIDE, seed=3)
    body = json.dumps({"signature_name": contract.TENSOR_SIGNATURE, "instances": [lr.tolist()]})
    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        expected = pool.submit(_signature_output, export_dir, lr)  # while the server starts
        with server_process_lib.start(
            os.path.join(base, BIG_MODEL), BIG_MODEL, extra_args=["--max_instances=1"]
        ) as server:
            peak = PeakMemory(server.process.pid)
            expected.result()
            peak.reset()
            url = f"http://{server.rest_address}/v1/models/{BIG_MODEL}:predict"
            request = urllib.request.Request(url, body.encode())
            with urllib.request.urlopen(request, timeout=120) as response:
                length = int(response.headers["Content-Length"])
                answer = response.read()
            growth = peak.growth_mib()
    assert growth < 300, f"the server grew by {growth:.0f} MiB for one request"
    assert len(answer) == length
    sr = _pixels(answer, (1, BIG_SIDE * SCALE, BIG_SIDE * SCALE, 3))
    np.testing.assert_array_equal(sr, expected.result())


@pytest.mark.parametrize("shape", [(1, 2), (3, 1), (2, 3, 4), (2, 5, 7, 3), (2, 2, 2, 2, 3)])
def test_uint8_answers_are_json_of_the_same_values(shape):
    array = np.random.default_rng(0).integers(0, 256, shape, dtype=np.uint8)
    for payload in (
        {"predictions": array},
        {"outputs": {"a": array, "b": ["text", 1.5]}},
        {"predictions": [{"a": row, "b": row} for row in array]},
    ):
        length, chunks = rest_api.encode_json(payload)
        text = b"".join(chunks)
        assert len(text) == length
        assert json.loads(text) == json.loads(json.dumps(payload, default=np.ndarray.tolist))


def _cpu_seconds(pid):
    with open(f"/proc/{pid}/stat", encoding="ascii") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def test_a_rest_client_that_goes_away_stops_the_computation(server_process):
    """16 images of 100x100 take the server a few CPU seconds; closing the connection after
    sending them must stop the work within a poll, and the server keeps serving."""
    pid = server_process.process.pid
    batch = np.stack([make_image(100, 100, seed=i) for i in range(16)])
    body = json.dumps(
        {"signature_name": contract.TENSOR_SIGNATURE, "inputs": batch.tolist()}
    ).encode()
    host, port = server_process.rest_address.rsplit(":", 1)
    sock = socket.create_connection((host, int(port)))
    sock.sendall(
        f"POST {PREDICT} HTTP/1.1\r\nHost: x\r\nContent-Length: {len(body)}\r\n\r\n".encode() + body
    )
    time.sleep(0.5)  # the server is computing
    sock.close()
    time.sleep(0.5)  # the handler polls its socket every 50 ms; TF stops at its next loop
    start = _cpu_seconds(pid)
    time.sleep(2)
    after_close = _cpu_seconds(pid) - start
    request = urllib.request.Request(
        f"http://{server_process.rest_address}{PREDICT}", data=GOOD.encode(), method="POST"
    )
    with urllib.request.urlopen(request, timeout=60) as answer:
        assert answer.status == 200
    assert after_close < 0.3, f"{after_close:.2f} s CPU in the 2 s after the client left"
