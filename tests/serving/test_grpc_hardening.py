"""Inputs are checked before they are built, never converted, and a request stops with its client.

gRPC requests are raw TensorProtos (tensorflow_serving.apis) sent to a real server, REST requests
raw JSON; the memory and CPU of the server subprocess are read from /proc.
"""

import os
import threading
import time

import grpc
import numpy as np
import pytest
import tensorflow as tf
from tensorflow.core.framework import tensor_pb2, types_pb2
from tensorflow_serving.apis import predict_pb2, prediction_service_pb2_grpc

from serving import contract, model_manager
from serving.limits import ServerLimits
from tests.fixtures import make_image, png_bytes, rest_json
from tests.serving.conftest import MODEL_NAME, SCALE

LR = make_image(6, 5, seed=3)


def _request(signature, name, tensor):
    request = predict_pb2.PredictRequest()
    request.model_spec.name = MODEL_NAME
    request.model_spec.signature_name = signature
    request.inputs[name].CopyFrom(tensor)
    return request


def _uint8_request(tensor):
    return _request(contract.TENSOR_SIGNATURE, contract.TENSOR_INPUT, tensor)


def _bytes_request(tensor):
    return _request(contract.BYTES_SIGNATURE, contract.BYTES_INPUT, tensor)


def _raw(dtype, shape, **values):
    """A TensorProto as a client may write it by hand: any dtype, shape and value fields."""
    tensor = tensor_pb2.TensorProto()
    tensor.dtype = dtype
    for size in shape:
        tensor.tensor_shape.dim.add().size = size
    for field, value in values.items():
        if field == "tensor_content":
            tensor.tensor_content = value
        else:
            getattr(tensor, field).extend(value)
    return tensor


def _stub(address):
    channel = grpc.insecure_channel(address, options=contract.GRPC_CHANNEL_OPTIONS)
    return channel, prediction_service_pb2_grpc.PredictionServiceStub(channel)


@pytest.fixture(scope="module")
def stub(server):
    channel, stub = _stub(server.grpc_address)
    with channel:
        yield stub


def _expected(loaded, image):
    out = loaded.signatures[contract.TENSOR_SIGNATURE](lr_image=tf.constant(image[np.newaxis]))
    return out[contract.TENSOR_OUTPUT].numpy()


def _upscale(stub, tensor):
    response = stub.Predict(_uint8_request(tensor), timeout=60)
    return tf.make_ndarray(response.outputs[contract.TENSOR_OUTPUT])


def test_grpc_size_bomb_is_refused_before_it_is_built(server_process):
    """65 bytes declaring a 16384 x 16384 image (768 MiB): tf.make_ndarray grew the server by
    2.3 GiB before any check; the declared shape is refused now."""
    bomb = _raw(types_pb2.DT_UINT8, [1, 16384, 16384, 3], int_val=[7])
    channel, stub = _stub(server_process.grpc_address)
    with channel:
        server_process.peak.reset()
        with pytest.raises(grpc.RpcError) as error:
            stub.Predict(_uint8_request(bomb), timeout=60)
        growth = server_process.peak.growth_mib()
    assert error.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "max_request_pixels" in error.value.details()
    assert "'lr_image'" in error.value.details()
    assert growth < 300, f"the server grew by {growth:.0f} MiB"


def test_grpc_uint8_as_int_val_equals_tensor_content(stub, loaded):
    """The hand-written int_val encoding is read exactly like tensor_content."""
    as_values = _raw(types_pb2.DT_UINT8, LR[np.newaxis].shape, int_val=LR.ravel().tolist())
    as_content = _raw(types_pb2.DT_UINT8, LR[np.newaxis].shape, tensor_content=LR.tobytes())
    expected = _expected(loaded, LR)
    np.testing.assert_array_equal(_upscale(stub, as_values), expected)
    np.testing.assert_array_equal(_upscale(stub, as_content), expected)


SHAPE = [1, *LR.shape]
COUNT = LR.size
BAD_GRPC_TENSORS = {
    # TF Serving casts: 300 wrapped to 44, 0.9 became 0.
    "int64_to_uint8": (_uint8_request, _raw(types_pb2.DT_INT64, SHAPE, int64_val=[300] * COUNT)),
    "float_to_uint8": (_uint8_request, _raw(types_pb2.DT_FLOAT, SHAPE, float_val=[0.9] * COUNT)),
    "uint8_int_val_300": (_uint8_request, _raw(types_pb2.DT_UINT8, SHAPE, int_val=[300] * COUNT)),
    "uint8_int_val_negative": (
        _uint8_request,
        _raw(types_pb2.DT_UINT8, SHAPE, int_val=[-1] * COUNT),
    ),
    # tf.make_ndarray repeats the last value to fill the declared shape.
    "one_int_val_for_many": (_uint8_request, _raw(types_pb2.DT_UINT8, SHAPE, int_val=[7])),
    "short_tensor_content": (
        _uint8_request,
        _raw(types_pb2.DT_UINT8, SHAPE, tensor_content=b"\x00" * (COUNT - 1)),
    ),
    "content_and_int_val": (
        _uint8_request,
        _raw(types_pb2.DT_UINT8, SHAPE, tensor_content=LR.tobytes(), int_val=[1]),
    ),
    "one_string_for_two": (
        _bytes_request,
        _raw(types_pb2.DT_STRING, [2], string_val=[png_bytes(LR)]),
    ),
    "float_as_image_bytes": (_bytes_request, tf.make_tensor_proto(np.zeros([1], np.float32))),
    "too_many_instances": (
        _uint8_request,
        _raw(types_pb2.DT_UINT8, [17, 1, 1, 3], tensor_content=b"\x00" * 51),
    ),
    "wrong_rank": (_uint8_request, _raw(types_pb2.DT_UINT8, [3], tensor_content=b"abc")),
    "negative_dim": (_uint8_request, _raw(types_pb2.DT_UINT8, [1, -1, 1, 3])),
    "unknown_dtype": (_uint8_request, _raw(77, SHAPE)),
}


@pytest.mark.parametrize("case", sorted(BAD_GRPC_TENSORS))
def test_grpc_bad_tensor_is_invalid_argument_then_good_request(stub, loaded, case):
    make_request, tensor = BAD_GRPC_TENSORS[case]
    with pytest.raises(grpc.RpcError) as error:
        stub.Predict(make_request(tensor), timeout=60)
    assert error.value.code() == grpc.StatusCode.INVALID_ARGUMENT, error.value.details()
    input_name = list(make_request(tensor).inputs)[0]
    assert f"'{input_name}'" in error.value.details()
    good = _upscale(stub, tf.make_tensor_proto(LR[np.newaxis]))
    np.testing.assert_array_equal(good, _expected(loaded, LR))


def test_grpc_unknown_input_name_is_invalid_argument(stub):
    request = _request(contract.TENSOR_SIGNATURE, "image", tf.make_tensor_proto(LR[np.newaxis]))
    with pytest.raises(grpc.RpcError) as error:
        stub.Predict(request, timeout=60)
    assert error.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "lr_image" in error.value.details()


def _post(server, body):
    return rest_json(server.rest_address, f"/v1/models/{MODEL_NAME}:predict", body)


def _nested(depth):
    value = 0
    for _ in range(depth):
        value = [value]
    return value


PIXEL = [[[[0, 0, 0]]]]
BAD_REST_VALUES = {
    "ints_as_image_bytes": ({"instances": [1, 2]}, contract.BYTES_INPUT),
    "null_as_image_bytes": ({"instances": [None]}, contract.BYTES_INPUT),
    "float_for_uint8": ({"inputs": [[[[0.9, 0, 0]]]]}, contract.TENSOR_INPUT),
    "300_for_uint8": ({"inputs": [[[[300, 0, 0]]]]}, contract.TENSOR_INPUT),
    "negative_for_uint8": ({"inputs": [[[[-1, 0, 0]]]]}, contract.TENSOR_INPUT),
    "huge_int_for_uint8": ({"inputs": [[[[2**70, 0, 0]]]]}, contract.TENSOR_INPUT),
    "bool_for_uint8": ({"inputs": [[[[True, False, True]]]]}, contract.TENSOR_INPUT),
    "bool_among_ints": ({"inputs": [[[[True, 0, 0]]]]}, contract.TENSOR_INPUT),
    "null_for_uint8": ({"inputs": [[[[None, 0, 0]]]]}, contract.TENSOR_INPUT),
    "string_for_uint8": ({"inputs": [[[["a", 0, 0]]]]}, contract.TENSOR_INPUT),
    "ragged": ({"inputs": [[[[0, 0, 0]], [[0, 0, 0], [0, 0, 0]]]]}, contract.TENSOR_INPUT),
    "ragged_deep_inside": ({"inputs": [[[[0, 0, _nested(60)]]]]}, contract.TENSOR_INPUT),
    "nested_too_deep": ({"inputs": _nested(60)}, contract.TENSOR_INPUT),
}


@pytest.mark.parametrize("case", sorted(BAD_REST_VALUES))
def test_rest_bad_values_are_a_400_naming_the_input(server, case):
    body, input_name = BAD_REST_VALUES[case]
    if input_name == contract.TENSOR_INPUT:
        body = {"signature_name": contract.TENSOR_SIGNATURE, **body}
    status, answer = _post(server, body)
    assert status == 400, answer
    assert f"'{input_name}'" in answer["error"]


def test_rest_uint8_values_in_range_are_served(server, loaded):
    body = {"signature_name": contract.TENSOR_SIGNATURE, "inputs": [LR.tolist()]}
    status, answer = _post(server, body)
    assert status == 200, answer
    np.testing.assert_array_equal(np.asarray(answer["outputs"], np.uint8), _expected(loaded, LR))


def test_limits_are_checked_on_the_declared_shape(loaded):
    """Instances and N * H * W, refused before an array of that size is built."""
    servable = model_manager.Servable(
        1, loaded, ServerLimits(max_instances=2, max_request_pixels=60)
    )
    image = LR.tolist()  # 6 x 5 = 30 pixels
    assert servable.predict(contract.TENSOR_SIGNATURE, {"lr_image": [image, image]})
    with pytest.raises(model_manager.RequestError, match="max_instances=2"):
        servable.predict(contract.TENSOR_SIGNATURE, {"lr_image": [image] * 3})
    big = make_image(8, 8).tolist()  # 64 pixels
    with pytest.raises(model_manager.RequestError, match="max_request_pixels=60"):
        servable.predict(contract.TENSOR_SIGNATURE, {"lr_image": [big]})
    with pytest.raises(model_manager.RequestError, match="max_instances=2"):
        servable.predict(contract.BYTES_SIGNATURE, {"image_bytes": [b"x"] * 3})


@pytest.mark.parametrize(
    "value", [_nested(5000), [[[[0, 0, _nested(5000)]]]], [[[[0, 0, 0]]], _nested(5000)]]
)
def test_deep_nesting_is_invalid_argument_not_recursion(loaded, value):
    """(Over REST, rest_api's own parsing must also survive such a body; here the conversion.)"""
    servable = model_manager.Servable(1, loaded)
    with pytest.raises(model_manager.RequestError, match="'lr_image'") as error:
        servable.predict(contract.TENSOR_SIGNATURE, {"lr_image": value})
    assert error.value.code == contract.INVALID_ARGUMENT


# 16 images of 100 x 100 (the test export's largest): a few CPU seconds through the tiny model.
SLOW_BATCH = np.stack([make_image(100, 100, seed=i) for i in range(16)])


def _cpu_seconds(pid):
    with open(f"/proc/{pid}/stat", encoding="ascii") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def test_grpc_request_past_its_deadline_stops_computing(server_process):
    """Before, the server computed the whole batch for a client that had given up."""
    pid = server_process.process.pid
    request = _uint8_request(tf.make_tensor_proto(SLOW_BATCH))
    channel, stub = _stub(server_process.grpc_address)
    with channel:
        with pytest.raises(grpc.RpcError) as error:
            stub.Predict(request, timeout=0.5)
        assert error.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
        time.sleep(0.5)  # the watcher polls every 50 ms, TF stops at its next loop iteration
        start = _cpu_seconds(pid)
        time.sleep(2)
        after_deadline = _cpu_seconds(pid) - start
        # The same request with time to finish: the server still serves, and it shows what an
        # uncancelled request costs.
        start = _cpu_seconds(pid)
        response = stub.Predict(request, timeout=120)
        full = _cpu_seconds(pid) - start
    sr = tf.make_ndarray(response.outputs[contract.TENSOR_OUTPUT])
    assert sr.shape == (16, 100 * SCALE, 100 * SCALE, 3)
    assert full > 0.5, f"the request is too cheap ({full:.2f} s CPU) to show anything"
    assert after_deadline < 0.2, f"{after_deadline:.2f} s CPU after the deadline (full: {full:.2f})"


def test_cancelling_one_request_does_not_cancel_another(loaded):
    """TF keeps one process-wide cancellation context; a request in another thread must not
    run under it (see model_manager._install_per_thread_cancellation)."""
    servable = model_manager.Servable(1, loaded)
    cancel = threading.Event()
    results = {}

    def run(key, batch, is_cancelled):
        try:
            results[key] = servable.predict(
                contract.TENSOR_SIGNATURE, {"lr_image": batch}, is_cancelled
            )
        except model_manager.RequestError as e:
            results[key] = e

    cancelled = threading.Thread(target=run, args=("cancelled", SLOW_BATCH, cancel.is_set))
    cancelled.start()
    time.sleep(0.2)  # computing with its CancellationManager
    batch = SLOW_BATCH[:4]
    other = threading.Thread(target=run, args=("other", batch, None))
    other.start()
    time.sleep(0.2)
    cancel.set()
    cancelled.join()
    other.join()
    assert isinstance(results["cancelled"], model_manager.RequestError)
    assert results["cancelled"].code == contract.CANCELLED
    expected = loaded.signatures[contract.TENSOR_SIGNATURE](lr_image=tf.constant(batch))
    np.testing.assert_array_equal(
        results["other"][contract.TENSOR_OUTPUT], expected[contract.TENSOR_OUTPUT].numpy()
    )
