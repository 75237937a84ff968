"""The local server over raw REST (urllib JSON) and raw gRPC (hand-built PredictRequest)."""

import base64
import concurrent.futures
import http.client
import io
import json

import grpc
import numpy as np
import pytest
import tensorflow as tf
from PIL import Image
from tensorflow_serving.apis import predict_pb2, prediction_service_pb2_grpc

from serving import contract
from tests.fixtures import make_image, png_bytes, rest_json
from tests.serving.conftest import MODEL_NAME, SCALE

LR = make_image(20, 24, seed=7)


def _in_process(loaded, image):
    out = loaded.signatures[contract.TENSOR_SIGNATURE](lr_image=tf.constant(image[np.newaxis]))
    return out[contract.TENSOR_OUTPUT][0].numpy()


def _post(server, path, body):
    return rest_json(server.rest_address, path, body)


def _get(server, path):
    return rest_json(server.rest_address, path, timeout=10)


def _b64(data):
    return {"b64": base64.b64encode(data).decode()}


def _decode_png(value):
    return np.asarray(Image.open(io.BytesIO(base64.b64decode(value["b64"]))))


PREDICT = f"/v1/models/{MODEL_NAME}:predict"


def _assert_good_rest_request(server, loaded):
    status, body = _post(server, PREDICT, {"instances": [_b64(png_bytes(LR))]})
    assert status == 200, body
    np.testing.assert_array_equal(_decode_png(body["predictions"][0]), _in_process(loaded, LR))


def test_status_like_tf_serving(server):
    assert _get(server, f"/v1/models/{MODEL_NAME}") == (
        200,
        {
            "model_version_status": [
                {
                    "version": "1",
                    "state": "AVAILABLE",
                    "status": {"error_code": "OK", "error_message": ""},
                }
            ]
        },
    )
    assert _get(server, "/v1/models/unknown")[0] == 404


def test_rest_row_bytes_round_trip(server, loaded):
    _assert_good_rest_request(server, loaded)


def test_rest_columnar_tensor_round_trip_with_version(server, loaded):
    status, body = _post(
        server,
        f"/v1/models/{MODEL_NAME}/versions/1:predict",
        {"signature_name": contract.TENSOR_SIGNATURE, "inputs": [LR.tolist()]},
    )
    assert status == 200, body
    sr = np.asarray(body["outputs"], np.uint8)
    assert sr.shape == (1, 20 * SCALE, 24 * SCALE, 3)
    np.testing.assert_array_equal(sr[0], _in_process(loaded, LR))


def test_rest_named_row_instances(server, loaded):
    instance = {contract.BYTES_INPUT: _b64(png_bytes(LR))}
    status, body = _post(server, PREDICT, {"instances": [instance, instance]})
    assert status == 200 and len(body["predictions"]) == 2
    np.testing.assert_array_equal(_decode_png(body["predictions"][1]), _in_process(loaded, LR))


BIG = make_image(120, 100, seed=1)  # 12000 pixels, over the test export's limit of 10000.
BAD_REST_REQUESTS = {
    "malformed_json": (PREDICT, b'{"instances": [', 400, "JSON"),
    "bad_base64": (PREDICT, {"instances": [{"b64": "not base64!"}]}, 400, "base64"),
    "not_an_image": (PREDICT, {"instances": [_b64(b"hello")]}, 400, "image"),
    "over_pixel_limit": (PREDICT, {"instances": [_b64(png_bytes(BIG))]}, 400, "pixel limit"),
    "unknown_signature": (PREDICT, {"signature_name": "nope", "instances": [1]}, 400, "nope"),
    "unknown_model": ("/v1/models/nope:predict", {"instances": [1]}, 404, "nope"),
    "unknown_version": (
        f"/v1/models/{MODEL_NAME}/versions/9:predict",
        {"instances": [1]},
        404,
        "9",
    ),
    "wrong_shape": (
        PREDICT,
        {"signature_name": contract.TENSOR_SIGNATURE, "inputs": [[1, 2, 3]]},
        400,
        "shape",
    ),
    "neither_instances_nor_inputs": (PREDICT, {"examples": []}, 400, "instances"),
}


@pytest.mark.parametrize("case", sorted(BAD_REST_REQUESTS))
def test_rest_bad_request_then_good_request(server, loaded, case):
    path, body, want_status, want_text = BAD_REST_REQUESTS[case]
    status, answer = _post(server, path, body)
    assert status == want_status, answer
    assert want_text.lower() in answer["error"].lower()
    _assert_good_rest_request(server, loaded)


@pytest.mark.parametrize("length", ["-1", "abc"])
def test_rest_bad_content_length_is_a_400_then_good_request(server, loaded, length):
    host, port = server.rest_address.rsplit(":", 1)
    connection = http.client.HTTPConnection(host, int(port), timeout=10)
    connection.putrequest("POST", PREDICT)
    connection.putheader("Content-Length", length)
    connection.endheaders()
    response = connection.getresponse()
    assert response.status == 400
    assert "content-length" in json.loads(response.read())["error"].lower()
    connection.close()
    _assert_good_rest_request(server, loaded)


def _grpc_request(image, signature=contract.BYTES_SIGNATURE, model=MODEL_NAME, version=None):
    request = predict_pb2.PredictRequest()
    request.model_spec.name = model
    request.model_spec.signature_name = signature
    if version is not None:
        request.model_spec.version.value = version
    if signature == contract.TENSOR_SIGNATURE:
        request.inputs[contract.TENSOR_INPUT].CopyFrom(tf.make_tensor_proto(image[np.newaxis]))
    else:
        data = image if isinstance(image, bytes) else png_bytes(image)
        request.inputs[contract.BYTES_INPUT].CopyFrom(tf.make_tensor_proto([data]))
    return request


@pytest.fixture(scope="module")
def stub(server):
    with grpc.insecure_channel(
        server.grpc_address, options=contract.GRPC_CHANNEL_OPTIONS
    ) as channel:
        yield prediction_service_pb2_grpc.PredictionServiceStub(channel)


def _assert_good_grpc_request(stub, loaded):
    response = stub.Predict(_grpc_request(LR), timeout=60)
    png = tf.make_ndarray(response.outputs[contract.BYTES_OUTPUT])[0]
    np.testing.assert_array_equal(np.asarray(Image.open(io.BytesIO(png))), _in_process(loaded, LR))
    assert response.model_spec.version.value == 1


def test_grpc_round_trips_both_signatures(stub, loaded):
    _assert_good_grpc_request(stub, loaded)
    response = stub.Predict(_grpc_request(LR, contract.TENSOR_SIGNATURE, version=1), timeout=60)
    sr = tf.make_ndarray(response.outputs[contract.TENSOR_OUTPUT])
    assert sr.dtype == np.uint8 and sr.shape == (1, 20 * SCALE, 24 * SCALE, 3)
    np.testing.assert_array_equal(sr[0], _in_process(loaded, LR))


BAD_GRPC_REQUESTS = {
    "not_an_image": (dict(image=b"hello"), grpc.StatusCode.INVALID_ARGUMENT),
    "over_pixel_limit": (dict(image=BIG), grpc.StatusCode.INVALID_ARGUMENT),
    "unknown_signature": (dict(image=LR, signature="nope"), grpc.StatusCode.INVALID_ARGUMENT),
    "unknown_model": (dict(image=LR, model="nope"), grpc.StatusCode.NOT_FOUND),
    "unknown_version": (dict(image=LR, version=9), grpc.StatusCode.NOT_FOUND),
}


@pytest.mark.parametrize("case", sorted(BAD_GRPC_REQUESTS))
def test_grpc_bad_request_then_good_request(stub, loaded, case):
    kwargs, want_code = BAD_GRPC_REQUESTS[case]
    with pytest.raises(grpc.RpcError) as error:
        stub.Predict(_grpc_request(**kwargs), timeout=60)
    assert error.value.code() == want_code
    assert error.value.details()
    _assert_good_grpc_request(stub, loaded)


def test_concurrent_rest_and_grpc_requests(server, stub, loaded):
    expected = _in_process(loaded, LR)

    def rest_call(_):
        return _decode_png(
            _post(server, PREDICT, {"instances": [_b64(png_bytes(LR))]})[1]["predictions"][0]
        )

    def grpc_call(_):
        response = stub.Predict(_grpc_request(LR, contract.TENSOR_SIGNATURE), timeout=60)
        return tf.make_ndarray(response.outputs[contract.TENSOR_OUTPUT])[0]

    with concurrent.futures.ThreadPoolExecutor(8) as pool:
        results = list(pool.map(rest_call, range(8))) + list(pool.map(grpc_call, range(8)))
    for result in results:
        np.testing.assert_array_equal(result, expected)
