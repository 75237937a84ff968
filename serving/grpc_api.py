"""TF Serving's gRPC PredictionService/Predict and ModelService/GetModelStatus (official protos)."""

import grpc
import tensorflow as tf
from tensorflow_serving.apis import (
    get_model_status_pb2,
    model_service_pb2_grpc,
    predict_pb2,
    prediction_service_pb2_grpc,
)

from serving import contract
from serving.model_manager import RequestError


def _abort(context, error):
    # TF Serving's status names are gRPC's code names.
    context.abort(getattr(grpc.StatusCode, error.code, grpc.StatusCode.INTERNAL), error.message)


def _requested_version(model_spec):
    return model_spec.version.value if model_spec.HasField("version") else None


class PredictionServicer(prediction_service_pb2_grpc.PredictionServiceServicer):
    """Predict over a model_manager.ModelManager."""

    def __init__(self, manager):
        self._manager = manager

    def Predict(self, request, context):  # noqa: N802 (the proto's method name)
        spec = request.model_spec
        signature = spec.signature_name or contract.BYTES_SIGNATURE
        try:
            try:
                inputs = {k: tf.make_ndarray(v) for k, v in request.inputs.items()}
            except (TypeError, ValueError) as e:
                raise RequestError(
                    contract.INVALID_ARGUMENT, f"Unreadable input tensor: {e}"
                ) from None
            version, outputs = self._manager.predict(
                spec.name, _requested_version(spec), signature, inputs
            )
        except RequestError as e:
            _abort(context, e)
        response = predict_pb2.PredictResponse()
        response.model_spec.name = spec.name
        response.model_spec.version.value = version
        response.model_spec.signature_name = signature
        for name, value in outputs.items():
            response.outputs[name].CopyFrom(tf.make_tensor_proto(value))
        return response


class ModelStatusServicer(model_service_pb2_grpc.ModelServiceServicer):
    """GetModelStatus (what `GET /v1/models/<name>` answers over REST)."""

    def __init__(self, manager):
        self._manager = manager

    def GetModelStatus(self, request, context):  # noqa: N802
        spec = request.model_spec
        try:
            status = self._manager.status(spec.name, _requested_version(spec))
        except RequestError as e:
            _abort(context, e)
        response = get_model_status_pb2.GetModelStatusResponse()
        for entry in status["model_version_status"]:
            version_status = response.model_version_status.add()
            version_status.version = int(entry["version"])
            version_status.state = get_model_status_pb2.ModelVersionStatus.AVAILABLE
        return response


def add_services(server, manager):
    prediction_service_pb2_grpc.add_PredictionServiceServicer_to_server(
        PredictionServicer(manager), server
    )
    model_service_pb2_grpc.add_ModelServiceServicer_to_server(ModelStatusServicer(manager), server)
