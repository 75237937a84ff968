"""Client for the exported model over TF Serving's REST or gRPC API (TF Serving or local_server).

  with ServingClient("127.0.0.1:8501", "rest", "srgan") as client:
      png = client.upscale_encoded([open("lr.png", "rb").read()])[0]
      sr = client.upscale_array(lr_uint8)          # [N, H, W, 3] -> [N, H*s, W*s, 3]

Connection failures and timeouts are retried with backoff; every failure surfaces as a
serving.client_errors.ServingError subclass (also importable from here) whose message says what
went wrong (connection refused, unknown model, a rejected request, a server-side error).

Needs no TensorFlow: REST is urllib + JSON, gRPC uses serving.wire's own message classes.
"""

import base64
import json
import time
import urllib.error
import urllib.request

import numpy as np

from serving import contract
from serving.client_errors import (  # noqa: F401 (re-exported: callers catch client_lib.*Error)
    BadRequestError,
    ModelNotFoundError,
    ServerSideError,
    ServerUnavailableError,
    ServingError,
)

# Aliases for the callers that spell protocols through this module (contract.* is the source).
REST, GRPC, PROTOCOLS = contract.REST, contract.GRPC, contract.PROTOCOLS


def _rest_error(server, status, body):
    """An HTTP error answer -> the client_errors class of its status, with the server's message."""
    try:
        message = json.loads(body)["error"]
    except (ValueError, KeyError, TypeError):
        message = body[:500]
    if status == contract.HTTP_STATUS[contract.NOT_FOUND]:
        return ModelNotFoundError(f"Not found on {server}: {message}")
    if 400 <= status < 500:
        return BadRequestError(f"Request rejected by {server} (HTTP {status}): {message}")
    return ServerSideError(f"Server error on {server} (HTTP {status}): {message}")


def _from_json(value):
    if isinstance(value, dict) and set(value) == {"b64"}:
        return base64.b64decode(value["b64"])
    if isinstance(value, list):
        return [_from_json(v) for v in value]
    if isinstance(value, dict):
        return {k: _from_json(v) for k, v in value.items()}
    return value


def _to_json(array):
    array = np.asarray(array)
    if array.dtype.kind in "SO":
        return np.vectorize(
            lambda b: {"b64": base64.b64encode(b).decode("ascii")}, otypes=[object]
        )(array).tolist()
    return array.tolist()


class ServingClient:
    """Talks to one model on one server.

    Args:
      server: "host:port" (REST port for "rest", gRPC port for "grpc").
      protocol: "rest" or "grpc".
      model_name: the served model name.
      version: a specific version, or None for the newest.
      timeout: seconds per attempt.
      retries: extra attempts after a connection failure or timeout (not after a rejection).
    """

    def __init__(
        self,
        server,
        protocol,
        model_name=contract.DEFAULT_MODEL_NAME,
        version=None,
        timeout=60.0,
        retries=2,
    ):
        if protocol not in contract.PROTOCOLS:
            raise ValueError(f"protocol must be one of {contract.PROTOCOLS}, got {protocol!r}.")
        self.server, self.protocol, self.model_name = server, protocol, model_name
        self.version, self.timeout, self.retries = version, timeout, retries
        self._grpc = None
        if protocol == contract.GRPC:
            # Imported here so that a REST-only install needs neither grpcio nor protobuf.
            from serving import grpc_client

            self._grpc = grpc_client.GrpcConnection(server, timeout)

    def close(self):
        if self._grpc:
            self._grpc.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc_info):
        self.close()

    def _with_retries(self, attempt):
        for i in range(self.retries + 1):
            try:
                return attempt()
            except ServerUnavailableError:
                if i == self.retries:
                    raise
                time.sleep(0.5 * 2**i)

    def _model_url(self):
        version = f"/versions/{self.version}" if self.version is not None else ""
        return f"http://{self.server}/v1/models/{self.model_name}{version}"

    def _rest_call(self, url, payload=None):
        data = None if payload is None else json.dumps(payload).encode("utf-8")
        request = urllib.request.Request(
            url, data=data, headers={"Content-Type": "application/json"}
        )
        try:
            with urllib.request.urlopen(request, timeout=self.timeout) as response:
                return json.loads(response.read())
        except urllib.error.HTTPError as e:
            if e.code == contract.HTTP_STATUS[contract.UNAVAILABLE]:
                raise ServerUnavailableError(f"{self.server} is unavailable (HTTP 503).") from None
            raise _rest_error(self.server, e.code, e.read().decode("utf-8", "replace")) from None
        except (urllib.error.URLError, TimeoutError, ConnectionError) as e:
            reason = getattr(e, "reason", e)
            raise ServerUnavailableError(
                f"Cannot reach a REST server at {self.server} ({reason}). Is the server running "
                f"and is this its REST port?"
            ) from None

    def status(self):
        """The model status (TF Serving's GET /v1/models/<name> body, or its gRPC equivalent)."""
        if self._grpc:
            return self._with_retries(lambda: self._grpc.status(self.model_name, self.version))
        return self._with_retries(lambda: self._rest_call(self._model_url()))

    def predict(self, signature_name, inputs):
        """Runs a signature. inputs: name -> array-like; returns output name -> numpy array."""
        if self._grpc:
            return self._with_retries(
                lambda: self._grpc.predict(self.model_name, self.version, signature_name, inputs)
            )
        payload = {
            "signature_name": signature_name,
            "inputs": {name: _to_json(value) for name, value in inputs.items()},
        }
        response = self._with_retries(
            lambda: self._rest_call(self._model_url() + ":predict", payload)
        )
        outputs = _from_json(response["outputs"])
        # TF Serving drops the name of a lone output in columnar answers.
        if not (isinstance(outputs, dict) and outputs):
            outputs = {_lone_output_name(signature_name): outputs}
        return {
            name: np.asarray(value, dtype=object if name.endswith("_bytes") else None)
            for name, value in outputs.items()
        }

    def upscale_encoded(self, images):
        """Encoded PNG/JPEG/BMP images (bytes) -> list of upscaled PNG bytes (serving_default)."""
        outputs = self.predict(
            contract.BYTES_SIGNATURE, {contract.BYTES_INPUT: np.array(list(images), dtype=object)}
        )
        return list(outputs[contract.BYTES_OUTPUT])

    def upscale_array(self, images):
        """uint8 [N, H, W, 3] -> uint8 [N, H*s, W*s, 3] (the tensor signature)."""
        outputs = self.predict(
            contract.TENSOR_SIGNATURE, {contract.TENSOR_INPUT: np.asarray(images, np.uint8)}
        )
        return outputs[contract.TENSOR_OUTPUT].astype(np.uint8)


def _lone_output_name(signature_name):
    """The name of a signature's one output, which TF Serving's columnar REST answer omits."""
    signature_name = signature_name or contract.BYTES_SIGNATURE
    if signature_name not in contract.OUTPUT_OF:
        raise ServingError(
            f"The server answered one unnamed output for signature {signature_name!r}; this "
            f"client knows the output names of {contract.SIGNATURES} only."
        )
    return contract.OUTPUT_OF[signature_name]
