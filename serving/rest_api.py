"""TF Serving's REST API (predict and model status) over http.server, for serving.local_server.

  POST /v1/models/<name>[/versions/<v>]:predict   {"instances": [...]} or {"inputs": ...}
  GET  /v1/models/<name>[/versions/<v>]           {"model_version_status": [...]}

JSON follows TF Serving: {"b64": "..."} values are base64-decoded, string outputs whose names
end in `_bytes` are returned as {"b64": "..."}, and errors are {"error": "..."} with 400/404/500.
"""

import base64
import binascii
import http.server
import json
import re

import numpy as np

from serving import contract
from serving.model_manager import RequestError

_PATH = re.compile(
    r"^/v1/models/(?P<name>[^/:]+)(?:/versions/(?P<version>\d+))?"
    r"(?P<verb>:predict)?$"
)
MAX_BODY_BYTES = 512 * 1024 * 1024


def _decode_b64(value):
    """Replaces every {"b64": str} in nested lists by the decoded bytes."""
    if isinstance(value, dict) and set(value) == {"b64"}:
        try:
            return base64.b64decode(value["b64"], validate=True)
        except (binascii.Error, TypeError, ValueError):
            raise RequestError(
                contract.INVALID_ARGUMENT, 'Unable to base64 decode a {"b64": ...} value.'
            ) from None
    if isinstance(value, list):
        return [_decode_b64(v) for v in value]
    if isinstance(value, str):
        return value.encode("utf-8")
    return value


def _is_named(value, input_names):
    return isinstance(value, dict) and set(value) != {"b64"} and set(value) <= set(input_names)


def parse_json(body):
    """Request body -> JSON object, or INVALID_ARGUMENT."""
    try:
        request = json.loads(body)
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise RequestError(contract.INVALID_ARGUMENT, f"JSON Parse error: {e}") from None
    if not isinstance(request, dict):
        raise RequestError(contract.INVALID_ARGUMENT, "Request body must be a JSON object.")
    return request


def parse_predict_request(request, input_names):
    """Predict JSON object -> (input name -> nested-list value, "row" | "columnar")."""
    if ("instances" in request) == ("inputs" in request):
        raise RequestError(
            contract.INVALID_ARGUMENT,
            "Request body must be a JSON object with exactly "
            'one of "instances" (row) or "inputs" (columnar).',
        )
    if "inputs" in request:
        inputs = request["inputs"]
        if not _is_named(inputs, input_names):
            inputs = {input_names[0]: inputs} if len(input_names) == 1 else inputs
        if not isinstance(inputs, dict):
            raise RequestError(contract.INVALID_ARGUMENT, f'"inputs" must name {input_names}.')
        return {k: _decode_b64(v) for k, v in inputs.items()}, "columnar"
    instances = request["instances"]
    if not isinstance(instances, list) or not instances:
        raise RequestError(contract.INVALID_ARGUMENT, '"instances" must be a non-empty list.')
    if all(_is_named(i, input_names) for i in instances):
        names = set(instances[0])
        if any(set(i) != names for i in instances):
            raise RequestError(
                contract.INVALID_ARGUMENT, "All instances must name the same inputs."
            )
        return {n: _decode_b64([i[n] for i in instances]) for n in names}, "row"
    if len(input_names) != 1:
        raise RequestError(
            contract.INVALID_ARGUMENT, f"Instances must be objects naming {input_names}."
        )
    return {input_names[0]: _decode_b64(instances)}, "row"


def _to_json(name, array):
    if array.dtype == object:
        if name.endswith("_bytes"):
            encode = np.vectorize(
                lambda b: {"b64": base64.b64encode(b).decode("ascii")}, otypes=[object]
            )
        else:
            encode = np.vectorize(lambda b: b.decode("utf-8", "replace"), otypes=[object])
        return encode(array).tolist() if array.size else array.tolist()
    return array.tolist()


def format_predict_response(outputs, request_format):
    """{output name: numpy array} -> TF Serving's predictions/outputs JSON object."""
    values = {name: _to_json(name, array) for name, array in outputs.items()}
    if request_format == "columnar":
        return {"outputs": next(iter(values.values())) if len(values) == 1 else values}
    if len(values) == 1:
        return {"predictions": next(iter(values.values()))}
    batch = len(next(iter(values.values())))
    return {"predictions": [{n: v[i] for n, v in values.items()} for i in range(batch)]}


def _content_length(header):
    """The request body size; a missing header is an empty body, a bad one a 400."""
    if header is None:
        return 0
    if not header.strip().isdigit():
        raise RequestError(contract.INVALID_ARGUMENT, f"Bad Content-Length header: {header!r}.")
    return int(header)


def make_handler(manager):
    """An http.server handler class bound to a model_manager.ModelManager."""

    class Handler(http.server.BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, format, *args):  # noqa: A002 (the base class's name)
            pass  # One line per request on stderr would drown the server's own messages.

        def _reply(self, status, payload):
            body = json.dumps(payload).encode("utf-8")
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def _route(self, want_predict):
            match = _PATH.match(self.path)
            if not match or bool(match["verb"]) != want_predict:
                raise RequestError(
                    contract.NOT_FOUND, f"Malformed request: {self.command} {self.path}"
                )
            return match["name"], match["version"] and int(match["version"])

        def _handle(self, action):
            try:
                self._reply(200, action())
            except RequestError as e:
                self._reply(contract.HTTP_STATUS.get(e.code, 500), {"error": e.message})
            except Exception as e:  # The server must keep serving whatever one request does.
                self._reply(500, {"error": f"Internal error: {e}"})

        def do_GET(self):  # noqa: N802 (http.server's naming)
            self._handle(lambda: manager.status(*self._route(want_predict=False)))

        def do_POST(self):  # noqa: N802
            self._handle(self._predict)

        def _predict(self):
            try:
                length = _content_length(self.headers.get("Content-Length"))
            except RequestError:
                self.close_connection = True  # the body's extent is unknown: no keep-alive
                raise
            if length > MAX_BODY_BYTES:
                self.close_connection = True  # the unread body must not be parsed as a request
                raise RequestError(
                    contract.INVALID_ARGUMENT, f"Request body over {MAX_BODY_BYTES} bytes."
                )
            body = self.rfile.read(length)
            name, version = self._route(want_predict=True)
            request = parse_json(body)
            signature = request.get("signature_name")
            servable = manager.resolve(name, version)
            inputs, request_format = parse_predict_request(request, servable.input_names(signature))
            outputs = servable.predict(signature, inputs)
            return format_predict_response(outputs, request_format)

    return Handler
