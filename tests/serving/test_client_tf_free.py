"""The client without TensorFlow: a fresh process calls the server over REST and gRPC with
serving.client loaded and neither tensorflow nor keras imported; serving.wire's messages are
field for field TF Serving's and exchange bytes with the official classes both ways."""

import json
import subprocess
import sys

import numpy as np
import pytest
import tensorflow as tf
from tensorflow.core.framework import tensor_pb2, tensor_shape_pb2, types_pb2
from tensorflow_serving.apis import get_model_status_pb2, model_pb2, predict_pb2

from serving import contract, wire
from tests.fixtures import make_image, png_bytes
from tests.serving.conftest import MODEL_NAME, REPO

LR = make_image(12, 16, seed=3)

# Runs in a fresh interpreter: argv = rest address, grpc address, model name, LR .npy, output .npz.
_CLIENT_SCRIPT = """
import json, sys
import numpy as np
import serving.client
from serving import client_lib, contract
rest, grpc_address, model_name, lr_path, out_path = sys.argv[1:]
lr = np.load(lr_path)
png = open(lr_path + ".png", "rb").read()
results, statuses = {}, []
for protocol, address in ((contract.REST, rest), (contract.GRPC, grpc_address)):
    with client_lib.ServingClient(address, protocol, model_name) as client:
        statuses.append(client.status())
        results[protocol + "_encoded"] = np.frombuffer(client.upscale_encoded([png])[0], np.uint8)
        results[protocol + "_array"] = client.upscale_array(lr[np.newaxis])
np.savez(out_path, **results)
print(json.dumps(statuses))
heavy = {"tensorflow", "keras", "tensorflow_serving"}
print(json.dumps(sorted(m for m in sys.modules if m.split(".")[0] in heavy)))
"""


def test_a_fresh_process_uses_both_protocols_without_tensorflow(server, loaded, tmp_path):
    lr_path = str(tmp_path / "lr.npy")
    np.save(lr_path, LR)
    (tmp_path / "lr.npy.png").write_bytes(png_bytes(LR))
    out_path = str(tmp_path / "out.npz")
    result = subprocess.run(
        [sys.executable, "-c", _CLIENT_SCRIPT, server.rest_address, server.grpc_address]
        + [MODEL_NAME, lr_path, out_path],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    *_, statuses, heavy_modules = result.stdout.strip().splitlines()
    assert json.loads(heavy_modules) == []  # no TensorFlow, Keras or TF Serving was imported
    rest_status, grpc_status = json.loads(statuses)
    assert (
        rest_status
        == grpc_status
        == {
            "model_version_status": [
                {
                    "version": "1",
                    "state": contract.AVAILABLE,
                    "status": {"error_code": contract.OK, "error_message": ""},
                }
            ]
        }
    )
    signature = loaded.signatures[contract.TENSOR_SIGNATURE]
    expected = signature(lr_image=tf.constant(LR[np.newaxis]))[contract.TENSOR_OUTPUT].numpy()
    outputs = np.load(out_path)
    for protocol in contract.PROTOCOLS:
        np.testing.assert_array_equal(outputs[protocol + "_array"], expected)
        decoded = tf.io.decode_png(outputs[protocol + "_encoded"].tobytes()).numpy()
        np.testing.assert_array_equal(decoded, expected[0])


# Official fields the client neither reads nor writes (kept as unknown fields when parsed).
_LEFT_OUT = {
    "tensorflow.TensorProto": {"resource_handle_val", "variant_val"},
    "tensorflow.serving.PredictRequest": {
        "predict_streamed_options",
        "client_id",
        "request_options",
    },
}
_OFFICIAL_FILES = (
    tensor_pb2,
    tensor_shape_pb2,
    types_pb2,
    model_pb2,
    predict_pb2,
    get_model_status_pb2,
)


_OUR_CLASSES = (
    wire.TensorProto,
    wire.TensorShapeProto,
    wire.ModelSpec,
    wire.PredictRequest,
    wire.PredictResponse,
    wire.StatusProto,
    wire.ModelVersionStatus,
    wire.GetModelStatusRequest,
    wire.GetModelStatusResponse,
)


def _ours_and_official():
    """(our message descriptor, the official one of the same full name), nested ones included."""
    pairs, todo = [], [cls.DESCRIPTOR for cls in _OUR_CLASSES]
    official_pool = tensor_pb2.DESCRIPTOR.pool
    while todo:
        ours = todo.pop()
        pairs.append((ours, official_pool.FindMessageTypeByName(ours.full_name)))
        todo.extend(ours.nested_types)
    return pairs


def _type_name(field):
    kind = field.message_type or field.enum_type
    return kind.full_name if kind else None


@pytest.mark.parametrize(
    "ours,official", _ours_and_official(), ids=lambda d: d.full_name if d else ""
)
def test_messages_match_tf_serving_field_for_field(ours, official):
    assert official.file.name.startswith(("tensorflow/", "tensorflow_serving/"))
    assert set(official.fields_by_name) - set(ours.fields_by_name) == _LEFT_OUT.get(
        ours.full_name, set()
    )
    assert ours.GetOptions().map_entry == official.GetOptions().map_entry
    for name, field in ours.fields_by_name.items():
        theirs = official.fields_by_name[name]
        assert (field.number, field.type, field.label, _type_name(field)) == (
            theirs.number,
            theirs.type,
            theirs.label,
            _type_name(theirs),
        ), name
        assert field.is_packed == theirs.is_packed, name
        oneof = field.containing_oneof
        assert (oneof and oneof.name) == (theirs.containing_oneof and theirs.containing_oneof.name)
    for enum in ours.enum_types:
        assert _values(enum) == _values(official.enum_types_by_name[enum.name])


def _values(enum):
    return {value.name: value.number for value in enum.values}


def test_enums_match_tf_serving():
    data_type = _values(wire.POOL.FindEnumTypeByName("tensorflow.DataType"))
    assert data_type.items() <= _values(types_pb2.DataType.DESCRIPTOR).items()
    official_code = tensor_pb2.DESCRIPTOR.pool.FindEnumTypeByName("tensorflow.error.Code")
    ours_code = wire.POOL.FindEnumTypeByName("tensorflow.error.Code")
    assert _values(ours_code).items() <= _values(official_code).items()
    assert set(_values(ours_code).values()) == set(range(17))


def test_our_classes_live_in_a_private_pool():
    assert wire.PredictRequest.DESCRIPTOR.file.pool is wire.POOL
    assert predict_pb2.PredictRequest.DESCRIPTOR.file.pool is not wire.POOL


_REQUEST_INPUTS = {
    "pixels": make_image(3, 5, seed=1)[np.newaxis],
    "files": np.array([b"\x89PNG...", b"", "\u00e9".encode()], dtype=object),
    "mask": np.array([[True, False]]),
    "values": np.linspace(-1, 1, 6, dtype=np.float32).reshape(2, 3),
}


def test_a_request_of_ours_parses_as_the_official_request():
    ours = wire.PredictRequest()
    ours.model_spec.name, ours.model_spec.signature_name = MODEL_NAME, contract.TENSOR_SIGNATURE
    ours.model_spec.version.value = 7
    ours.output_filter.append(contract.TENSOR_OUTPUT)
    for name, value in _REQUEST_INPUTS.items():
        ours.inputs[name].CopyFrom(wire.make_tensor_proto(value))
    official = predict_pb2.PredictRequest()
    official.model_spec.name = MODEL_NAME
    official.model_spec.signature_name = contract.TENSOR_SIGNATURE
    official.model_spec.version.value = 7
    official.output_filter.append(contract.TENSOR_OUTPUT)
    for name, value in _REQUEST_INPUTS.items():
        official.inputs[name].CopyFrom(tf.make_tensor_proto(value))
    parsed = predict_pb2.PredictRequest.FromString(ours.SerializeToString())
    assert parsed == official
    for name, value in _REQUEST_INPUTS.items():
        np.testing.assert_array_equal(tf.make_ndarray(parsed.inputs[name]), value)


def _official_outputs():
    int_vals = tensor_pb2.TensorProto(dtype=types_pb2.DT_INT32, int_val=[4, -5, 6])
    int_vals.tensor_shape.dim.add(size=3)
    half = tf.make_tensor_proto(np.array([0.5, -2, 65504], np.float16))
    half.tensor_content = b""
    half.half_val.extend(np.array([0.5, -2, 65504], np.float16).view(np.uint16).tolist())
    empty = tensor_pb2.TensorProto(dtype=types_pb2.DT_INT64)
    empty.tensor_shape.dim.add(size=2)
    return {
        "sr_image": tf.make_tensor_proto(make_image(4, 6, seed=2)[np.newaxis]),
        "sr_image_bytes": tf.make_tensor_proto(np.array([b"png-1", b"png-2"], dtype=object)),
        "one_float_fills": tf.make_tensor_proto(1.5, shape=[2, 3]),
        "one_string_fills": tf.make_tensor_proto(b"x", shape=[3]),
        "int_val": int_vals,
        "half_val": half,
        "complex": tf.make_tensor_proto(np.array([1 + 2j, -3j], np.complex64), shape=[2]),
        "no_values": empty,
        "scalar": tf.make_tensor_proto(np.int64(-9)),
    }


def test_an_official_response_parses_as_ours_and_decodes_as_tf_does():
    official = predict_pb2.PredictResponse()
    official.model_spec.name = MODEL_NAME
    official.model_spec.version.value = 3
    for name, proto in _official_outputs().items():
        official.outputs[name].CopyFrom(proto)
    assert official.outputs["one_float_fills"].float_val == [1.5]  # really the broadcast form
    ours = wire.PredictResponse.FromString(official.SerializeToString())
    assert ours.model_spec.name == MODEL_NAME and ours.model_spec.version.value == 3
    assert ours.SerializeToString(deterministic=True) == official.SerializeToString(
        deterministic=True
    )
    for name, proto in official.outputs.items():
        expected, decoded = tf.make_ndarray(proto), wire.make_ndarray(ours.outputs[name])
        assert decoded.shape == expected.shape and decoded.dtype == expected.dtype, name
        np.testing.assert_array_equal(decoded, expected, err_msg=name)


def test_an_official_model_status_parses_as_ours():
    official = get_model_status_pb2.GetModelStatusResponse()
    available = official.model_version_status.add(version=2, state=30)
    available.status.error_message = "fine"
    failed = official.model_version_status.add(version=1, state=50)
    failed.status.error_code, failed.status.error_message = 5, "gone"
    ours = wire.GetModelStatusResponse.FromString(official.SerializeToString())
    states = [
        (s.version, wire.state_name(s.state), wire.error_code_name(s.status.error_code))
        for s in ours.model_version_status
    ]
    assert states == [(2, contract.AVAILABLE, contract.OK), (1, "END", contract.NOT_FOUND)]
    assert ours.model_version_status[1].status.error_message == "gone"
    request = wire.GetModelStatusRequest()
    request.model_spec.name, request.model_spec.version_label = MODEL_NAME, "stable"
    parsed = get_model_status_pb2.GetModelStatusRequest.FromString(request.SerializeToString())
    assert parsed.model_spec.WhichOneof("version_choice") == "version_label"
    assert (parsed.model_spec.name, parsed.model_spec.version_label) == (MODEL_NAME, "stable")


def test_unsupported_tensors_are_refused_in_one_line():
    with pytest.raises(ValueError, match="No TensorProto DataType for numpy dtype"):
        wire.make_tensor_proto(np.zeros(2, "datetime64[s]"))
    with pytest.raises(ValueError, match="DT_VARIANT|DataType 21"):
        wire.make_ndarray(wire.TensorProto(dtype=21))
