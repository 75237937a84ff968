"""The local server's Prometheus path: TF Serving's metric names, exact counts after good and bad
requests over REST and gRPC, scraped over HTTP and parsed with prometheus_client's own parser."""

import base64
import json
import os
import urllib.error
import urllib.request

import grpc
import numpy as np
import pytest
import tensorflow as tf
from prometheus_client.parser import text_string_to_metric_families
from tensorflow_serving.apis import predict_pb2, prediction_service_pb2_grpc

from serving import contract, metrics, server_lib
from tests.fixtures import make_image, png_bytes
from tests.serving.conftest import MODEL_NAME

LR = make_image(8, 12, seed=3)
SD, U8 = contract.BYTES_SIGNATURE, contract.TENSOR_SIGNATURE


def _start(model_base_path, monitoring_path=metrics.DEFAULT_PATH):
    """A server in this process; an empty `model_base_path` starts it at once (no model)."""
    return server_lib.start(
        server_lib.ServerConfig(
            model_base_path=model_base_path,
            model_name=MODEL_NAME,
            rest_port=0,
            grpc_port=0,
            monitoring_path=monitoring_path,
        )
    )


def _http(address, path, body=None):
    """(status, body bytes, content type) of a GET (body None) or POST."""
    request = urllib.request.Request(f"http://{address}{path}", data=body)
    try:
        with urllib.request.urlopen(request, timeout=60) as response:
            return response.status, response.read(), response.headers["Content-Type"]
    except urllib.error.HTTPError as e:
        return e.code, e.read(), e.headers["Content-Type"]


def _scrape(address, path=metrics.DEFAULT_PATH):
    """{family name: {(sample name, sorted label items): value}} of one scrape over HTTP."""
    status, body, content_type = _http(address, path)
    assert status == 200 and content_type.startswith("text/plain")
    return {
        family.name: {(s.name, tuple(sorted(s.labels.items()))): s.value for s in family.samples}
        for family in text_string_to_metric_families(body.decode("utf-8"))
    }


def _samples(families, name, sample_name=None):
    """{label tuple: value} of one sample name (default: the family's own) of a family."""
    sample_name = sample_name or name
    return {
        labels: value for (s, labels), value in families.get(name, {}).items() if s == sample_name
    }


def _labels(**labels):
    return tuple(sorted(labels.items()))


def _rest_requests(address):
    """Two good predictions, a bad body, an unknown model, a model status; returns statuses."""
    predict = f"/v1/models/{MODEL_NAME}:predict"
    png = {"b64": base64.b64encode(png_bytes(LR)).decode()}
    requests = [
        (predict, {"instances": [png]}),
        (predict, {"signature_name": U8, "instances": [LR.tolist()]}),
        (predict, b"{not json"),
        ("/v1/models/other:predict", {"instances": [png]}),
        (f"/v1/models/{MODEL_NAME}", None),
    ]
    return [
        _http(
            address,
            path,
            body if body is None or isinstance(body, bytes) else json.dumps(body).encode(),
        )[0]
        for path, body in requests
    ]


def _grpc_requests(address):
    """A good prediction, a float tensor where uint8 is expected, an unknown model."""
    stub = prediction_service_pb2_grpc.PredictionServiceStub(grpc.insecure_channel(address))
    good = predict_pb2.PredictRequest()
    good.model_spec.name = MODEL_NAME
    good.inputs[contract.BYTES_INPUT].CopyFrom(tf.make_tensor_proto([png_bytes(LR)]))
    bad = predict_pb2.PredictRequest()
    bad.model_spec.name = MODEL_NAME
    bad.model_spec.signature_name = U8
    bad.inputs[contract.TENSOR_INPUT].CopyFrom(
        tf.make_tensor_proto(LR[np.newaxis].astype(np.float32))
    )
    unknown = predict_pb2.PredictRequest()
    unknown.CopyFrom(good)
    unknown.model_spec.name = "other"
    codes = []
    for request in (good, bad, unknown):
        try:
            stub.Predict(request, timeout=60)
            codes.append(grpc.StatusCode.OK)
        except grpc.RpcError as e:
            codes.append(e.code())
    return codes


def test_counts_and_latency_after_good_and_bad_requests(export_base, tmp_path):
    served = _start(os.path.join(export_base, MODEL_NAME))
    with served as server, _start(str(tmp_path), monitoring_path="/metrics") as idle:
        before = _scrape(server.rest_address)
        assert _samples(before, metrics.REQUEST_COUNT) == {}
        assert _rest_requests(server.rest_address) == [200, 200, 400, 404, 200]
        assert _grpc_requests(server.grpc_address) == [
            grpc.StatusCode.OK,
            grpc.StatusCode.INVALID_ARGUMENT,
            grpc.StatusCode.NOT_FOUND,
        ]
        scraped = _scrape(server.rest_address)
        assert _scrape(server.rest_address) == scraped  # a scrape is no counted request
        idle_scrape = _scrape(idle.rest_address, "/metrics")
        assert _http(idle.rest_address, metrics.DEFAULT_PATH)[0] == 404

    # TF Serving's series, exact names and labels; a model this server does not serve is "".
    assert _samples(scraped, metrics.REQUEST_COUNT) == {
        _labels(model_name=MODEL_NAME, status="OK"): 4,  # 2 REST predicts, 1 status, 1 gRPC
        _labels(model_name=MODEL_NAME, status="INVALID_ARGUMENT"): 2,
        _labels(model_name="", status="NOT_FOUND"): 2,
    }
    # Per signature (""  where the body was not read), predict requests only.
    assert _samples(scraped, metrics.SIGNATURE_REQUEST_COUNT) == {
        _labels(model_name=MODEL_NAME, signature_name=SD, entrypoint="REST", status="OK"): 1,
        _labels(model_name=MODEL_NAME, signature_name=U8, entrypoint="REST", status="OK"): 1,
        _labels(
            model_name=MODEL_NAME, signature_name="", entrypoint="REST", status="INVALID_ARGUMENT"
        ): 1,
        _labels(model_name="", signature_name=SD, entrypoint="REST", status="NOT_FOUND"): 1,
        _labels(model_name=MODEL_NAME, signature_name=SD, entrypoint="GRPC", status="OK"): 1,
        _labels(
            model_name=MODEL_NAME, signature_name=U8, entrypoint="GRPC", status="INVALID_ARGUMENT"
        ): 1,
        _labels(model_name="", signature_name=SD, entrypoint="GRPC", status="NOT_FOUND"): 1,
    }
    # Latency of successful predictions only (as TF Serving), in microseconds.
    latency_count = _samples(scraped, metrics.REQUEST_LATENCY, metrics.REQUEST_LATENCY + "_count")
    assert latency_count == {
        _labels(model_name=MODEL_NAME, API="predict", entrypoint="REST"): 2,
        _labels(model_name=MODEL_NAME, API="Predict", entrypoint="GRPC"): 1,
    }
    buckets = _samples(scraped, metrics.REQUEST_LATENCY, metrics.REQUEST_LATENCY + "_bucket")
    rest = _labels(model_name=MODEL_NAME, API="predict", entrypoint="REST")
    rest_buckets = {dict(k)["le"]: v for k, v in buckets.items() if dict(k)["API"] == "predict"}
    assert len(rest_buckets) == len(metrics.LATENCY_BUCKETS_MICROS) + 1
    assert rest_buckets["+Inf"] == 2 and rest_buckets["10000.0"] <= 2
    total = _samples(scraped, metrics.REQUEST_LATENCY, metrics.REQUEST_LATENCY + "_sum")[rest]
    assert 0 < total < 120e6  # two requests, microseconds
    signature_count = _samples(
        scraped, metrics.SIGNATURE_REQUEST_LATENCY, metrics.SIGNATURE_REQUEST_LATENCY + "_count"
    )
    assert signature_count == {
        _labels(model_name=MODEL_NAME, signature_name=SD, entrypoint="REST"): 1,
        _labels(model_name=MODEL_NAME, signature_name=U8, entrypoint="REST"): 1,
        _labels(model_name=MODEL_NAME, signature_name=SD, entrypoint="GRPC"): 1,
    }
    # Two servers in one process share no count (the idle one serves a custom path).
    assert _samples(idle_scrape, metrics.REQUEST_COUNT) == {}
    assert _samples(idle_scrape, metrics.REQUEST_LATENCY, metrics.REQUEST_LATENCY + "_count") == {}


def test_disabled_path(tmp_path):
    with _start(str(tmp_path), monitoring_path="") as disabled:
        status, body, _ = _http(disabled.rest_address, metrics.DEFAULT_PATH)
        assert status == 404 and "error" in json.loads(body)
        assert disabled.metrics is None


@pytest.mark.parametrize("path", ["metrics", "/v1/models/x", "/m?x=1"])
def test_bad_monitoring_path_is_refused(path):
    with pytest.raises(ValueError, match="monitoring_path"):
        server_lib.ServerConfig(model_base_path="x", model_name="x", monitoring_path=path)


def test_cli_serves_the_default_path(server_process):
    """srgan-serve's --monitoring_path default is TF Serving's path (no exact counts: the
    session's server process is shared with other tests)."""
    scraped = _scrape(server_process.rest_address)
    assert metrics.REQUEST_COUNT in scraped and metrics.REQUEST_LATENCY in scraped
