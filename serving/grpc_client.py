"""gRPC side of serving.client_lib: PredictionServiceStub with tf.make_tensor_proto."""

import grpc
import numpy as np
import tensorflow as tf
from tensorflow_serving.apis import (
    get_model_status_pb2,
    model_service_pb2_grpc,
    predict_pb2,
    prediction_service_pb2_grpc,
)

from serving import client_lib, grpc_api

_RETRYABLE = (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED)


def _error(server, error):
    code, details = error.code(), error.details()
    if code in _RETRYABLE:
        return client_lib.ServerUnavailableError(
            f"Cannot reach a gRPC server at {server} ({code.name}: {details}). Is the server "
            f"running and is this its gRPC port?"
        )
    if code == grpc.StatusCode.NOT_FOUND:
        return client_lib.ModelNotFoundError(f"Not found on {server}: {details}")
    if code == grpc.StatusCode.INVALID_ARGUMENT:
        return client_lib.BadRequestError(f"Request rejected by {server}: {details}")
    return client_lib.ServerSideError(f"Server error on {server} ({code.name}): {details}")


def _fill_model_spec(spec, model_name, version):
    spec.name = model_name
    if version is not None:
        spec.version.value = int(version)


class GrpcConnection:
    """One channel (raised message limits: upscaled images exceed gRPC's 4 MiB default)."""

    def __init__(self, server, timeout):
        self._server, self._timeout = server, timeout
        self._channel = grpc.insecure_channel(server, options=grpc_api.CHANNEL_OPTIONS)
        self._predict = prediction_service_pb2_grpc.PredictionServiceStub(self._channel)
        self._models = model_service_pb2_grpc.ModelServiceStub(self._channel)

    def close(self):
        self._channel.close()

    def _call(self, method, request):
        try:
            return method(request, timeout=self._timeout)
        except grpc.RpcError as e:
            raise _error(self._server, e) from None

    def predict(self, model_name, version, signature_name, inputs):
        request = predict_pb2.PredictRequest()
        _fill_model_spec(request.model_spec, model_name, version)
        request.model_spec.signature_name = signature_name or ""
        for name, value in inputs.items():
            request.inputs[name].CopyFrom(tf.make_tensor_proto(np.asarray(value)))
        response = self._call(self._predict.Predict, request)
        return {name: tf.make_ndarray(proto) for name, proto in response.outputs.items()}

    def status(self, model_name, version):
        request = get_model_status_pb2.GetModelStatusRequest()
        _fill_model_spec(request.model_spec, model_name, version)
        response = self._call(self._models.GetModelStatus, request)
        return {
            "model_version_status": [
                {
                    "version": str(s.version),
                    "state": get_model_status_pb2.ModelVersionStatus.State.Name(s.state),
                }
                for s in response.model_version_status
            ]
        }
