"""TF Serving's gRPC messages without TensorFlow, and numpy <-> TensorProto.

`tensorflow_serving.apis.*_pb2` import `tensorflow.core.*_pb2`, which loads all of TensorFlow.
The client needs only a few messages, so they are declared here, field for field as in TF
Serving's .proto files (names, numbers, types and labels are checked against the official
descriptors by tests/serving/test_client_tf_free.py), and built in a private DescriptorPool:
the classes never clash with TensorFlow's registrations of the same names when both are loaded
in one process, and the bytes on the wire are the same.

Declared (with the fields the client reads or writes; fields left out are kept as unknown
fields when parsed):
  tensorflow.TensorProto            all but resource_handle_val (14) and variant_val (15)
  tensorflow.TensorShapeProto       dim {size, name}, unknown_rank
  tensorflow.DataType               the numpy-representable types
  tensorflow.serving.ModelSpec      name, version (google.protobuf.Int64Value), version_label,
                                    signature_name
  tensorflow.serving.PredictRequest / PredictResponse    model_spec, inputs/outputs, output_filter
  tensorflow.serving.GetModelStatusRequest / GetModelStatusResponse / ModelVersionStatus /
  StatusProto (error_code: tensorflow.error.Code)
"""

import math

import numpy as np
from google.protobuf import descriptor_pb2, descriptor_pool, message_factory, wrappers_pb2

PREDICT_METHOD = "/tensorflow.serving.PredictionService/Predict"
GET_MODEL_STATUS_METHOD = "/tensorflow.serving.ModelService/GetModelStatus"

_F = descriptor_pb2.FieldDescriptorProto
_OPTIONAL, _REPEATED = _F.LABEL_OPTIONAL, _F.LABEL_REPEATED

# tensorflow/core/framework/types.proto: the DataType numbers, numpy dtype, and the typed
# TensorProto field that carries values when tensor_content is empty.
_DTYPES = (
    ("DT_FLOAT", 1, np.float32, "float_val"),
    ("DT_DOUBLE", 2, np.float64, "double_val"),
    ("DT_INT32", 3, np.int32, "int_val"),
    ("DT_UINT8", 4, np.uint8, "int_val"),
    ("DT_INT16", 5, np.int16, "int_val"),
    ("DT_INT8", 6, np.int8, "int_val"),
    ("DT_STRING", 7, np.object_, "string_val"),
    ("DT_COMPLEX64", 8, np.complex64, "scomplex_val"),
    ("DT_INT64", 9, np.int64, "int64_val"),
    ("DT_BOOL", 10, np.bool_, "bool_val"),
    ("DT_UINT16", 17, np.uint16, "int_val"),
    ("DT_COMPLEX128", 18, np.complex128, "dcomplex_val"),
    ("DT_HALF", 19, np.float16, "half_val"),
    ("DT_UINT32", 22, np.uint32, "uint32_val"),
    ("DT_UINT64", 23, np.uint64, "uint64_val"),
)
DT_INVALID = 0
DT_FLOAT, DT_INT32, DT_UINT8, DT_STRING, DT_INT64 = 1, 3, 4, 7, 9
_DTYPE_OF_NUMBER = {number: np.dtype(dtype) for _, number, dtype, _ in _DTYPES}
_VAL_FIELD_OF_NUMBER = {number: field for _, number, _, field in _DTYPES}
_NUMBER_OF_DTYPE = {np.dtype(dtype): number for _, number, dtype, _ in _DTYPES}
_NAME_OF_NUMBER = {number: name for name, number, _, _ in _DTYPES}

# tensorflow/core/protobuf/error_codes.proto (tensorflow.error.Code).
_ERROR_CODES = (
    "OK CANCELLED UNKNOWN INVALID_ARGUMENT DEADLINE_EXCEEDED NOT_FOUND ALREADY_EXISTS "
    "PERMISSION_DENIED RESOURCE_EXHAUSTED FAILED_PRECONDITION ABORTED OUT_OF_RANGE "
    "UNIMPLEMENTED INTERNAL UNAVAILABLE DATA_LOSS UNAUTHENTICATED"
).split()


def _field(name, number, kind, type_name="", label=_OPTIONAL, oneof_index=None):
    """A FieldDescriptorProto; repeated scalars are packed, as in TF's proto3 files."""
    field = _F(name=name, number=number, type=kind, label=label, json_name=name)
    if type_name:
        field.type_name = type_name
    if oneof_index is not None:
        field.oneof_index = oneof_index
    if label == _REPEATED and kind not in (_F.TYPE_STRING, _F.TYPE_BYTES, _F.TYPE_MESSAGE):
        field.options.packed = True
    return field


def _enum(name, values):
    return descriptor_pb2.EnumDescriptorProto(
        name=name,
        value=[descriptor_pb2.EnumValueDescriptorProto(name=n, number=v) for n, v in values],
    )


def _message(name, fields, nested=(), enums=(), oneofs=()):
    return descriptor_pb2.DescriptorProto(
        name=name,
        field=fields,
        nested_type=nested,
        enum_type=enums,
        oneof_decl=[descriptor_pb2.OneofDescriptorProto(name=o) for o in oneofs],
    )


def _map_entry(name, value_type_name):
    entry = _message(
        name,
        [
            _field("key", 1, _F.TYPE_STRING),
            _field("value", 2, _F.TYPE_MESSAGE, value_type_name),
        ],
    )
    entry.options.map_entry = True
    return entry


def _file(name, package, messages=(), enums=(), dependencies=()):
    return descriptor_pb2.FileDescriptorProto(
        name=name,
        package=package,
        syntax="proto3",
        dependency=dependencies,
        message_type=messages,
        enum_type=enums,
    )


def _tensor_files():
    shape = _message(
        "TensorShapeProto",
        [
            _field("dim", 2, _F.TYPE_MESSAGE, ".tensorflow.TensorShapeProto.Dim", _REPEATED),
            _field("unknown_rank", 3, _F.TYPE_BOOL),
        ],
        nested=[
            _message("Dim", [_field("size", 1, _F.TYPE_INT64), _field("name", 2, _F.TYPE_STRING)])
        ],
    )
    tensor = _message(
        "TensorProto",
        [
            _field("dtype", 1, _F.TYPE_ENUM, ".tensorflow.DataType"),
            _field("tensor_shape", 2, _F.TYPE_MESSAGE, ".tensorflow.TensorShapeProto"),
            _field("version_number", 3, _F.TYPE_INT32),
            _field("tensor_content", 4, _F.TYPE_BYTES),
            _field("half_val", 13, _F.TYPE_INT32, label=_REPEATED),
            _field("float_val", 5, _F.TYPE_FLOAT, label=_REPEATED),
            _field("double_val", 6, _F.TYPE_DOUBLE, label=_REPEATED),
            _field("int_val", 7, _F.TYPE_INT32, label=_REPEATED),
            _field("string_val", 8, _F.TYPE_BYTES, label=_REPEATED),
            _field("scomplex_val", 9, _F.TYPE_FLOAT, label=_REPEATED),
            _field("int64_val", 10, _F.TYPE_INT64, label=_REPEATED),
            _field("bool_val", 11, _F.TYPE_BOOL, label=_REPEATED),
            _field("dcomplex_val", 12, _F.TYPE_DOUBLE, label=_REPEATED),
            _field("uint32_val", 16, _F.TYPE_UINT32, label=_REPEATED),
            _field("uint64_val", 17, _F.TYPE_UINT64, label=_REPEATED),
            _field("float8_val", 18, _F.TYPE_BYTES),
        ],
    )
    data_type = _enum("DataType", [("DT_INVALID", 0)] + [(n, v) for n, v, _, _ in _DTYPES])
    return (
        _file("srgan_wire/tensor.proto", "tensorflow", [shape, tensor], [data_type]),
        _file(
            "srgan_wire/error_codes.proto",
            "tensorflow.error",
            enums=[_enum("Code", list(zip(_ERROR_CODES, range(len(_ERROR_CODES)), strict=True)))],
        ),
    )


def _serving_file():
    spec_type, tensor_type = ".tensorflow.serving.ModelSpec", ".tensorflow.TensorProto"
    model_spec = _message(
        "ModelSpec",
        [
            _field("name", 1, _F.TYPE_STRING),
            _field("version", 2, _F.TYPE_MESSAGE, ".google.protobuf.Int64Value", oneof_index=0),
            _field("version_label", 4, _F.TYPE_STRING, oneof_index=0),
            _field("signature_name", 3, _F.TYPE_STRING),
        ],
        oneofs=["version_choice"],
    )
    request = _message(
        "PredictRequest",
        [
            _field("model_spec", 1, _F.TYPE_MESSAGE, spec_type),
            _field(
                "inputs",
                2,
                _F.TYPE_MESSAGE,
                ".tensorflow.serving.PredictRequest.InputsEntry",
                _REPEATED,
            ),
            _field("output_filter", 3, _F.TYPE_STRING, label=_REPEATED),
        ],
        nested=[_map_entry("InputsEntry", tensor_type)],
    )
    response = _message(
        "PredictResponse",
        [
            _field("model_spec", 2, _F.TYPE_MESSAGE, spec_type),
            _field(
                "outputs",
                1,
                _F.TYPE_MESSAGE,
                ".tensorflow.serving.PredictResponse.OutputsEntry",
                _REPEATED,
            ),
        ],
        nested=[_map_entry("OutputsEntry", tensor_type)],
    )
    status = _message(
        "StatusProto",
        [
            _field("error_code", 1, _F.TYPE_ENUM, ".tensorflow.error.Code"),
            _field("error_message", 2, _F.TYPE_STRING),
        ],
    )
    states = [("UNKNOWN", 0), ("START", 10), ("LOADING", 20), ("AVAILABLE", 30)]
    version_status = _message(
        "ModelVersionStatus",
        [
            _field("version", 1, _F.TYPE_INT64),
            _field("state", 2, _F.TYPE_ENUM, ".tensorflow.serving.ModelVersionStatus.State"),
            _field("status", 3, _F.TYPE_MESSAGE, ".tensorflow.serving.StatusProto"),
        ],
        enums=[_enum("State", states + [("UNLOADING", 40), ("END", 50)])],
    )
    status_request = _message(
        "GetModelStatusRequest", [_field("model_spec", 1, _F.TYPE_MESSAGE, spec_type)]
    )
    status_response = _message(
        "GetModelStatusResponse",
        [
            _field(
                "model_version_status",
                1,
                _F.TYPE_MESSAGE,
                ".tensorflow.serving.ModelVersionStatus",
                _REPEATED,
            )
        ],
    )
    return _file(
        "srgan_wire/serving.proto",
        "tensorflow.serving",
        [model_spec, request, response, status, version_status, status_request, status_response],
        dependencies=[
            wrappers_pb2.DESCRIPTOR.name,
            "srgan_wire/tensor.proto",
            "srgan_wire/error_codes.proto",
        ],
    )


def _build_pool():
    pool = descriptor_pool.DescriptorPool()
    pool.AddSerializedFile(wrappers_pb2.DESCRIPTOR.serialized_pb)
    for file_proto in (*_tensor_files(), _serving_file()):
        pool.AddSerializedFile(file_proto.SerializeToString())
    return pool


POOL = _build_pool()


def _class(full_name):
    return message_factory.GetMessageClass(POOL.FindMessageTypeByName(full_name))


TensorProto = _class("tensorflow.TensorProto")
TensorShapeProto = _class("tensorflow.TensorShapeProto")
ModelSpec = _class("tensorflow.serving.ModelSpec")
PredictRequest = _class("tensorflow.serving.PredictRequest")
PredictResponse = _class("tensorflow.serving.PredictResponse")
StatusProto = _class("tensorflow.serving.StatusProto")
ModelVersionStatus = _class("tensorflow.serving.ModelVersionStatus")
GetModelStatusRequest = _class("tensorflow.serving.GetModelStatusRequest")
GetModelStatusResponse = _class("tensorflow.serving.GetModelStatusResponse")


def state_name(state):
    """ModelVersionStatus.State number -> name ("AVAILABLE"); unknown numbers as "STATE_<n>"."""
    return _enum_name(ModelVersionStatus.DESCRIPTOR.enum_types_by_name["State"], state, "STATE")


def error_code_name(code):
    """tensorflow.error.Code number -> name ("OK", "NOT_FOUND"); unknown ones as "CODE_<n>"."""
    return _enum_name(POOL.FindEnumTypeByName("tensorflow.error.Code"), code, "CODE")


def _enum_name(enum, number, prefix):
    value = enum.values_by_number.get(number)
    return value.name if value else f"{prefix}_{number}"


def make_tensor_proto(array):
    """A numpy array (or array-like) -> TensorProto, encoded as tf.make_tensor_proto does.

    Numbers of more than one element travel as little-endian tensor_content (bool and complex
    excepted); single values, bools and complex numbers in their typed *_val field; bytes/str
    (object, bytes or str arrays) as string_val, str encoded as UTF-8.

    Raises:
      ValueError: a dtype TF Serving has no DataType for (e.g. a Python object that is not bytes).
    """
    array = np.asarray(array)
    proto = TensorProto()
    proto.tensor_shape.dim.extend(TensorShapeProto.Dim(size=size) for size in array.shape)
    if array.dtype.kind in "OSU":
        proto.dtype = DT_STRING
        proto.string_val.extend(_to_bytes(value) for value in array.reshape(-1))
        return proto
    dtype = array.dtype.newbyteorder("=")
    number = _NUMBER_OF_DTYPE.get(dtype)
    if number is None:
        raise ValueError(f"No TensorProto DataType for numpy dtype {array.dtype}.")
    proto.dtype = number
    values = np.ascontiguousarray(array, dtype.newbyteorder("<")).reshape(-1)
    if array.size > 1 and dtype.kind in "iuf":
        proto.tensor_content = values.tobytes()
        return proto
    field = _VAL_FIELD_OF_NUMBER[number]
    if field == "half_val":  # float16 bit patterns in int32s
        values = values.view(np.uint16)
    elif field in ("scomplex_val", "dcomplex_val"):  # (real, imaginary) pairs
        values = values.view(dtype.type(0).real.dtype)
    getattr(proto, field).extend(values.tolist())
    return proto


def _to_bytes(value):
    if isinstance(value, bytes):
        return value
    if isinstance(value, str):
        return value.encode("utf-8")
    raise ValueError(f"A string tensor holds bytes or str, got {type(value).__name__}.")


def make_ndarray(proto):
    """TensorProto -> numpy array, as tf.make_ndarray decodes it.

    Reads tensor_content, or else the typed *_val field of the dtype; fewer values than the shape
    holds repeat the last one (a single value fills the shape), no values give zeros (b"" for
    strings). Strings come back as an object array of bytes.

    Raises:
      ValueError: an unknown or unsupported dtype, or more values than the shape holds.
    """
    dtype = _DTYPE_OF_NUMBER.get(proto.dtype)
    if dtype is None:
        name = _NAME_OF_NUMBER.get(proto.dtype, f"DataType {proto.dtype}")
        raise ValueError(f"Cannot decode a TensorProto of {name} without TensorFlow.")
    shape = tuple(dim.size for dim in proto.tensor_shape.dim)
    count = math.prod(shape)
    if proto.tensor_content:
        content = np.frombuffer(proto.tensor_content, dtype.newbyteorder("<"))
        return content.astype(dtype).reshape(shape)
    field = _VAL_FIELD_OF_NUMBER[proto.dtype]
    if proto.dtype == DT_STRING:
        values = np.empty(len(proto.string_val), dtype=object)
        values[:] = list(proto.string_val)
        return _fill(values, count, b"").reshape(shape)
    raw = getattr(proto, field)
    if field == "half_val":  # float16 bit patterns in int32s
        values = np.asarray(raw, np.uint16).view(np.float16)
    elif field in ("scomplex_val", "dcomplex_val"):  # (real, imaginary) pairs
        values = np.asarray(raw, dtype.type(0).real.dtype).view(dtype)
    else:
        values = np.asarray(raw).astype(dtype)
    return _fill(values.astype(dtype), count, dtype.type(0)).reshape(shape)


def _fill(values, count, empty):
    """`values` extended to `count` by repeating the last (all `empty` when there is none)."""
    if len(values) > count:
        raise ValueError(f"A TensorProto holds {len(values)} values for {count} elements.")
    if len(values) == 0:
        filled = np.empty(count, values.dtype)
        filled[:] = empty
        return filled
    return np.concatenate([values, np.repeat(values[-1:], count - len(values))])
