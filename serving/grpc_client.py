"""gRPC side of serving.client_lib: TF Serving's Predict and GetModelStatus without TensorFlow.

Messages are serving.wire's TensorFlow-free classes (same bytes on the wire as
tensorflow_serving.apis), called through plain `channel.unary_unary` on TF Serving's method paths.
"""

import grpc

from serving import client_errors, contract, wire

_RETRYABLE = (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED)


def _error(server, error):
    """A grpc.RpcError -> the client_errors class of its status code, with the server's words."""
    code, details = error.code(), error.details()
    if code in _RETRYABLE:
        return client_errors.ServerUnavailableError(
            f"Cannot reach a gRPC server at {server} ({code.name}: {details}). Is the server "
            f"running and is this its gRPC port?"
        )
    if code.name == contract.NOT_FOUND:
        return client_errors.ModelNotFoundError(f"Not found on {server}: {details}")
    if code.name == contract.INVALID_ARGUMENT:
        return client_errors.BadRequestError(f"Request rejected by {server}: {details}")
    return client_errors.ServerSideError(f"Server error on {server} ({code.name}): {details}")


def _fill_model_spec(spec, model_name, version):
    spec.name = model_name
    if version is not None:
        spec.version.value = int(version)


class GrpcConnection:
    """One channel to a TF Serving gRPC port, with contract.GRPC_CHANNEL_OPTIONS's message limits.

    Args:
      server: "host:port" of the gRPC API.
      timeout: seconds per call.
    """

    def __init__(self, server, timeout):
        self._server, self._timeout = server, timeout
        self._channel = grpc.insecure_channel(server, options=contract.GRPC_CHANNEL_OPTIONS)
        self._predict = self._channel.unary_unary(
            wire.PREDICT_METHOD,
            request_serializer=wire.PredictRequest.SerializeToString,
            response_deserializer=wire.PredictResponse.FromString,
        )
        self._model_status = self._channel.unary_unary(
            wire.GET_MODEL_STATUS_METHOD,
            request_serializer=wire.GetModelStatusRequest.SerializeToString,
            response_deserializer=wire.GetModelStatusResponse.FromString,
        )

    def close(self):
        self._channel.close()

    def _call(self, method, request):
        try:
            return method(request, timeout=self._timeout)
        except grpc.RpcError as e:
            raise _error(self._server, e) from None

    def predict(self, model_name, version, signature_name, inputs):
        """Runs a signature; inputs: name -> array-like; returns output name -> numpy array."""
        request = wire.PredictRequest()
        _fill_model_spec(request.model_spec, model_name, version)
        request.model_spec.signature_name = signature_name or ""
        for name, value in inputs.items():
            request.inputs[name].CopyFrom(wire.make_tensor_proto(value))
        response = self._call(self._predict, request)
        return {name: wire.make_ndarray(proto) for name, proto in response.outputs.items()}

    def status(self, model_name, version):
        """The model's versions and states, shaped like TF Serving's REST status body."""
        # GET /v1/models/<name> answers the same fields with enum names as strings.
        request = wire.GetModelStatusRequest()
        _fill_model_spec(request.model_spec, model_name, version)
        response = self._call(self._model_status, request)
        return {
            "model_version_status": [
                {
                    "version": str(s.version),
                    "state": wire.state_name(s.state),
                    "status": {
                        "error_code": wire.error_code_name(s.status.error_code),
                        "error_message": s.status.error_message,
                    },
                }
                for s in response.model_version_status
            ]
        }
