"""Prometheus metrics of the local server, named and labelled like TF Serving's own.

  GET /monitoring/prometheus/metrics   (srgan-serve --monitoring_path; TF Serving's default path)

TF Serving (tensorflow_serving/servables/tensorflow/util.cc) keeps its metrics under names like
"/tensorflow/serving/request_count", and its Prometheus exporter (util/prometheus_exporter.cc)
replaces every character outside [a-zA-Z0-9_] by ':'. A dashboard built against TF Serving
therefore queries these series, which this module exposes with the same labels and units:

  :tensorflow:serving:request_count{model_name, status}        requests, every status
  :tensorflow:serving:request_latency{model_name, API, entrypoint}   histogram, microseconds,
      successful requests only (as TF Serving); API "predict" over REST, "Predict" over gRPC;
      entrypoint "REST" or "GRPC"

TF Serving has no per-signature metric; this server adds two, in the same style:

  :srgan:serving:request_count{model_name, signature_name, entrypoint, status}   predict requests
  :srgan:serving:request_latency{model_name, signature_name, entrypoint}   histogram, microseconds

Rendering. prometheus_client accepts names starting with ':' (valid Prometheus names), but its
Counter always exposes a sample named NAME_total (plus NAME_created), where TF Serving exposes
NAME itself: a query for :tensorflow:serving:request_count would find nothing. So the two request
counts are collected here and handed to prometheus_client's exposition as untyped families whose
samples carry TF Serving's exact name (`# TYPE ... untyped`: the text format has no other way to
say "counter without _total"; PromQL's rate() does not look at the type). The histograms are
prometheus_client Histograms, whose _bucket/_sum/_count samples are what TF Serving writes (they
also write a NAME_created gauge, which TF Serving does not have).

Label values are bounded, so a client cannot grow the registry without limit by asking for made-up
models or signatures: a model name this server does not serve is recorded as "" (TF Serving
records whatever name the client sent), as is a signature that the contract does not define or a
request that failed before its signature was read.

Each server owns a CollectorRegistry: two servers in one process never share a count.
"""

import threading

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Histogram, generate_latest
from prometheus_client.core import UnknownMetricFamily

from serving import contract

DEFAULT_PATH = "/monitoring/prometheus/metrics"  # TF Serving's PrometheusExporter::kPrometheusPath
CONTENT_TYPE = CONTENT_TYPE_LATEST

REST = "REST"
GRPC = "GRPC"
# TF Serving's "API" label: the REST verb, or the gRPC method.
API = {REST: "predict", GRPC: "Predict"}

# Upper bounds in microseconds (TF Serving's unit): 10 ms .. 60 s. An SR request is a whole
# convolutional network over every output pixel: a 64x64 tile is ~10 ms, a 1024x1024 image tens of
# seconds on a CPU. (TF Serving's own buckets, 10 us * 1.8^k, spend a dozen buckets below 10 ms.)
LATENCY_BUCKETS_MICROS = tuple(
    seconds * 1e6 for seconds in (0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1, 2, 5, 10, 20, 30, 60)
)

REQUEST_COUNT = ":tensorflow:serving:request_count"
REQUEST_LATENCY = ":tensorflow:serving:request_latency"
SIGNATURE_REQUEST_COUNT = ":srgan:serving:request_count"
SIGNATURE_REQUEST_LATENCY = ":srgan:serving:request_latency"


class _ExactNameCount:
    """A labelled request count exposed under its exact name (no _total suffix; see above)."""

    def __init__(self, name, documentation, labelnames):
        self._name = name
        self._documentation = documentation
        self._labelnames = labelnames
        self._counts = {}
        self._lock = threading.Lock()

    def inc(self, *labelvalues):
        with self._lock:
            self._counts[labelvalues] = self._counts.get(labelvalues, 0) + 1

    def collect(self):
        family = UnknownMetricFamily(self._name, self._documentation, labels=self._labelnames)
        with self._lock:
            counts = sorted(self._counts.items())
        for labelvalues, count in counts:
            family.add_metric(labelvalues, count)
        yield family


class ServingMetrics:
    """The request metrics of one server, in a registry of its own."""

    def __init__(self, model_name):
        self._model_name = model_name
        self.registry = CollectorRegistry()
        self._count = _ExactNameCount(
            REQUEST_COUNT, "The total number of requests.", ("model_name", "status")
        )
        self._signature_count = _ExactNameCount(
            SIGNATURE_REQUEST_COUNT,
            "The total number of predict requests per signature.",
            ("model_name", "signature_name", "entrypoint", "status"),
        )
        self.registry.register(self._count)
        self.registry.register(self._signature_count)
        self._latency = Histogram(
            REQUEST_LATENCY,
            "Distribution of wall time (in microseconds) for Tensorflow Serving request.",
            ("model_name", "API", "entrypoint"),
            buckets=LATENCY_BUCKETS_MICROS,
            registry=self.registry,
        )
        self._signature_latency = Histogram(
            SIGNATURE_REQUEST_LATENCY,
            "Distribution of wall time (in microseconds) of successful predict requests per "
            "signature.",
            ("model_name", "signature_name", "entrypoint"),
            buckets=LATENCY_BUCKETS_MICROS,
            registry=self.registry,
        )

    def _model_label(self, model_name):
        return model_name if model_name == self._model_name else ""

    def record_request(self, model_name, status):
        """A request that is no prediction (REST model status), counted as TF Serving does."""
        self._count.inc(self._model_label(model_name), _status_label(status))

    def record_predict(self, entrypoint, model_name, signature_name, status, seconds):
        """A predict request over `entrypoint` (REST / GRPC) that ended with `status`.

        `signature_name` None: the request did not name one (serving_default); "" : unknown.
        """
        model = self._model_label(model_name)
        status = _status_label(status)
        signature = contract.BYTES_SIGNATURE if signature_name is None else signature_name
        if signature not in contract.SIGNATURES:
            signature = ""
        self._count.inc(model, status)
        self._signature_count.inc(model, signature, entrypoint, status)
        if status == contract.OK:
            micros = seconds * 1e6
            self._latency.labels(model, API[entrypoint], entrypoint).observe(micros)
            self._signature_latency.labels(model, signature, entrypoint).observe(micros)

    def exposition(self):
        """The registry in Prometheus' text format (bytes), for a scrape."""
        return generate_latest(self.registry)


def _status_label(status):
    """A status name the contract knows (TF Serving's error codes), else UNKNOWN."""
    return status if status in contract.HTTP_STATUS else "UNKNOWN"


# The status name of an HTTP status this server's REST transport answers with on its own (not a
# RequestError's code): framing, size and time limits, out of memory, server bugs.
HTTP_STATUS_NAME = {
    200: contract.OK,
    400: contract.INVALID_ARGUMENT,
    404: contract.NOT_FOUND,
    408: contract.DEADLINE_EXCEEDED,
    411: contract.INVALID_ARGUMENT,
    413: contract.RESOURCE_EXHAUSTED,  # what gRPC answers a message over its size limit
    500: contract.INTERNAL,
    501: contract.UNIMPLEMENTED,
    503: contract.UNAVAILABLE,
}
