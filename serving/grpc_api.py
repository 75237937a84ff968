"""TF Serving's gRPC PredictionService/Predict and ModelService/GetModelStatus (official protos)."""

import logging
import time

import grpc
import tensorflow as tf
from tensorflow_serving.apis import (
    get_model_status_pb2,
    model_service_pb2_grpc,
    predict_pb2,
    prediction_service_pb2_grpc,
)

from serving import contract, metrics, model_manager
from serving.model_manager import RequestError


def _abort(context, error):
    # TF Serving's status names are gRPC's code names.
    context.abort(getattr(grpc.StatusCode, error.code, grpc.StatusCode.INTERNAL), error.message)


def _requested_version(model_spec):
    return model_spec.version.value if model_spec.HasField("version") else None


class PredictionServicer(prediction_service_pb2_grpc.PredictionServiceServicer):
    """Predict over a model_manager.ModelManager.

    Input TensorProtos are converted by model_manager.array_from_proto, not tf.make_ndarray:
    checked against the signature and the server's limits before they are materialised, and
    refused (INVALID_ARGUMENT) where TF Serving would convert a dtype or repeat a value to fill a
    shape. The computation stops when the client cancels or its deadline passes. With
    `serving_metrics` (metrics.ServingMetrics) every Predict is counted with its status.
    """

    def __init__(self, manager, serving_metrics=None):
        self._manager = manager
        self._metrics = serving_metrics

    def Predict(self, request, context):  # noqa: N802 (the proto's method name)
        start = time.monotonic()
        spec = request.model_spec
        signature = spec.signature_name or contract.BYTES_SIGNATURE
        status = contract.OK
        try:
            return self._predict(request, context, signature)
        except RequestError as e:
            status = e.code
            _abort(context, e)
        except Exception as e:  # INTERNAL with the reason, rather than gRPC's bare UNKNOWN
            status = contract.INTERNAL
            logging.exception("Predict failed")
            _abort(context, RequestError(contract.INTERNAL, f"Internal error: {e}"))
        finally:
            if self._metrics is not None:
                self._metrics.record_predict(
                    metrics.GRPC, spec.name, signature, status, time.monotonic() - start
                )

    def _predict(self, request, context, signature):
        spec = request.model_spec
        servable = self._manager.resolve(spec.name, _requested_version(spec))
        outputs = servable.predict(
            signature,
            _inputs(request, servable.input_specs(signature), servable.limits, signature),
            is_cancelled=lambda: not context.is_active(),
        )
        response = predict_pb2.PredictResponse()
        response.model_spec.name = spec.name
        response.model_spec.version.value = servable.version
        response.model_spec.signature_name = signature
        for name, value in outputs.items():
            response.outputs[name].CopyFrom(tf.make_tensor_proto(value))
        return response


def _inputs(request, specs, limits, signature):
    """{input name: numpy array} of a PredictRequest, each checked before it is built."""
    model_manager.check_input_names(signature, specs, request.inputs)
    return {
        name: model_manager.array_from_proto(name, proto, specs[name], limits)
        for name, proto in request.inputs.items()
    }


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


def add_services(server, manager, serving_metrics=None):
    prediction_service_pb2_grpc.add_PredictionServiceServicer_to_server(
        PredictionServicer(manager, serving_metrics), server
    )
    model_service_pb2_grpc.add_ModelServiceServicer_to_server(ModelStatusServicer(manager), server)
