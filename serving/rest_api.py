"""TF Serving's REST API (predict and model status) over http.server, for serving.local_server.

  POST /v1/models/<name>[/versions/<v>]:predict   {"instances": [...]} or {"inputs": ...}
  GET  /v1/models/<name>[/versions/<v>]           {"model_version_status": [...]}

JSON follows TF Serving: {"b64": "..."} values are base64-decoded, string outputs whose names
end in `_bytes` are returned as {"b64": "..."}, and errors are {"error": "..."} with the HTTP
status TF Serving gives their code (400, 404, 500, ...).

The transport is bounded by serving.limits.ServerLimits, because a request costs this process
memory and a worker thread (server_lib runs a fixed pool of them):
  * each request, headers and body, must arrive within read_timeout_seconds (408, then closed);
  * a body needs a Content-Length (411) of at most max_body_bytes (413), checked before reading
    it; Transfer-Encoding is not supported (501); a connection whose unread bytes cannot be told
    apart from the next request is closed after the answer;
  * a predict request names at most max_instances images (400), checked before conversion;
  * a uint8 answer is written as it is encoded, a block of rows at a time, with a precomputed
    Content-Length: a 4096x4096 image never becomes 50 M Python ints or one huge string.
"""

import base64
import binascii
import http.server
import io
import json
import re
import select
import socket
import time

import numpy as np

from serving import contract, metrics
from serving.limits import ServerLimits
from serving.model_manager import RequestError, input_specs

_PATH = re.compile(
    r"^/v1/models/(?P<name>[^/:]+)(?:/versions/(?P<version>\d+))?"
    r"(?P<verb>:predict)?$"
)

# Bytes of the answer encoded and written at a time.
_WRITE_CHUNK_BYTES = 1 << 20
# How long a closing connection is drained of a body it was answered without reading, so that the
# client reads the answer instead of a reset; and how much of it at most.
_LINGER_SECONDS = 1.0
_LINGER_BYTES = 1 << 20


class HttpError(Exception):
    """A request the transport rejects before it becomes a predict request (framing, size, time).

    Always closes the connection: the bytes after it cannot be trusted to start a new request.
    """

    def __init__(self, status, message):
        super().__init__(message)
        self.status = status
        self.message = message


def http_status(error):
    """The HTTP status of a RequestError: TF Serving's mapping of its code; 400 for a code the
    mapping does not know (a RequestError is by definition the request's fault)."""
    return contract.HTTP_STATUS.get(error.code, 400)


# String inputs are vectors of images: deeper lists are refused here, never recursed into.
_MAX_STRING_NESTING = 8


def _decode_b64(value, depth=0):
    """Replaces every {"b64": str} in nested lists by the decoded bytes, every str by its UTF-8."""
    if isinstance(value, dict) and set(value) == {"b64"}:
        try:
            return base64.b64decode(value["b64"], validate=True)
        except (binascii.Error, TypeError, ValueError):
            raise RequestError(
                contract.INVALID_ARGUMENT, 'Unable to base64 decode a {"b64": ...} value.'
            ) from None
    if isinstance(value, list):
        if depth >= _MAX_STRING_NESTING:
            raise RequestError(
                contract.INVALID_ARGUMENT,
                f"String values nested over {_MAX_STRING_NESTING} lists deep.",
            )
        return [_decode_b64(v, depth + 1) for v in value]
    if isinstance(value, str):
        try:
            return value.encode("utf-8")
        except UnicodeEncodeError:  # a lone surrogate escape such as "\ud800"
            raise RequestError(
                contract.INVALID_ARGUMENT, "A string value is not valid Unicode."
            ) from None
    return value


def _is_named(value, input_names):
    return isinstance(value, dict) and set(value) != {"b64"} and set(value) <= set(input_names)


def parse_json(body):
    """Request body -> JSON object, or INVALID_ARGUMENT (also for nesting too deep to parse)."""
    try:
        request = json.loads(body)
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise RequestError(contract.INVALID_ARGUMENT, f"JSON Parse error: {e}") from None
    except RecursionError:
        raise RequestError(
            contract.INVALID_ARGUMENT, "JSON Parse error: arrays or objects nested too deeply."
        ) from None
    if not isinstance(request, dict):
        raise RequestError(contract.INVALID_ARGUMENT, "Request body must be a JSON object.")
    return request


def signature_name(request):
    """The request's "signature_name" (None: serving_default), which must be a string."""
    name = request.get("signature_name")
    if name is not None and not isinstance(name, str):
        raise RequestError(contract.INVALID_ARGUMENT, '"signature_name" must be a string.')
    return name


def _check_instances(count, max_instances):
    if count > max_instances:
        raise RequestError(
            contract.INVALID_ARGUMENT,
            f"The request has {count} instances; this server accepts at most {max_instances} "
            f"per request (--max_instances).",
        )


def string_inputs(servable, signature):
    """The signature's string inputs: the only ones whose values hold {"b64": ...} or text."""
    specs = input_specs(servable.model, signature or contract.BYTES_SIGNATURE)
    return {name for name, spec in specs.items() if spec.dtype.name == "string"}


def parse_predict_request(
    request, input_names, max_instances=ServerLimits.max_instances, string_names=None
):
    """Predict JSON object -> (input name -> nested-list value, "row" | "columnar").

    A batch over `max_instances` is refused on the parsed list's length, before any value is
    looked at, let alone converted. Only inputs in `string_names` (None: all) are walked for
    {"b64": ...} values: a uint8 image's millions of numbers are passed on as parsed, not copied.
    """

    def decode(name, value):
        return _decode_b64(value) if string_names is None or name in string_names else value

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
        for value in inputs.values():
            if isinstance(value, list):
                _check_instances(len(value), max_instances)
        return {k: decode(k, v) for k, v in inputs.items()}, "columnar"
    instances = request["instances"]
    if not isinstance(instances, list) or not instances:
        raise RequestError(contract.INVALID_ARGUMENT, '"instances" must be a non-empty list.')
    _check_instances(len(instances), max_instances)
    if all(_is_named(i, input_names) for i in instances):
        names = set(instances[0])
        if any(set(i) != names for i in instances):
            raise RequestError(
                contract.INVALID_ARGUMENT, "All instances must name the same inputs."
            )
        return {n: decode(n, [i[n] for i in instances]) for n in names}, "row"
    if len(input_names) != 1:
        raise RequestError(
            contract.INVALID_ARGUMENT, f"Instances must be objects naming {input_names}."
        )
    return {input_names[0]: decode(input_names[0], instances)}, "row"


def _to_json(name, array):
    """An output array -> what the JSON answer holds: uint8 arrays stay arrays (encode_json
    streams them), strings become {"b64": ...} or text, anything else nested lists."""
    if array.dtype == object:
        if name.endswith("_bytes"):
            encode = np.vectorize(
                lambda b: {"b64": base64.b64encode(b).decode("ascii")}, otypes=[object]
            )
        else:
            encode = np.vectorize(lambda b: b.decode("utf-8", "replace"), otypes=[object])
        return encode(array).tolist() if array.size else array.tolist()
    if _Uint8Json.handles(array):
        return array
    return array.tolist()


def format_predict_response(outputs, request_format):
    """{output name: numpy array} -> TF Serving's predictions/outputs JSON object.

    Large uint8 arrays are left as numpy arrays in it: encode_json writes them.
    """
    values = {name: _to_json(name, array) for name, array in outputs.items()}
    if request_format == "columnar":
        return {"outputs": next(iter(values.values())) if len(values) == 1 else values}
    if len(values) == 1:
        return {"predictions": next(iter(values.values()))}
    batch = len(next(iter(values.values())))
    return {"predictions": [{n: v[i] for n, v in values.items()} for i in range(batch)]}


# Every uint8 value as a 4-byte word "[  7" (first channel) or ", 42" (next ones), right-aligned
# numbers padded with JSON whitespace: whole blocks of pixels are then one numpy gather. A pixel
# is its K words and a closing "],  " ("]]  " for the last one of a row): 4 (K + 1) bytes.
_FIRST = np.frombuffer(b"".join(b"[%3d" % v for v in range(256)), np.uint32)
_NEXT = np.frombuffer(b"".join(b",%3d" % v for v in range(256)), np.uint32)
_CLOSE_PIXEL = np.frombuffer(b"],  ", np.uint32)[0]
_CLOSE_ROW = np.frombuffer(b"]]  ", np.uint32)[0]


class _Uint8Json:
    """The JSON text of a uint8 array of rank >= 2, encoded a block of rows at a time.

    A "row" is the array's last two axes (W pixels of K channels), "[[  1,  2,  3],  [...]]  ".
    The leading axes only add brackets and commas between rows, so the total length is known
    before anything is encoded: the Content-Length of a streamed answer.
    """

    @staticmethod
    def handles(array):
        return (
            isinstance(array, np.ndarray)
            and array.dtype == np.uint8
            and array.ndim >= 2
            and array.size > 0
        )

    def __init__(self, array):
        *lead, width, channels = array.shape
        self._rows = array.reshape(-1, width, channels)
        self._row_len = 4 * (channels + 1) * width
        self._separators = _row_separators(lead, len(self._rows))
        self.length = len(self._rows) * self._row_len + sum(map(len, self._separators))

    @staticmethod
    def _encode_rows(rows):
        words = np.empty((*rows.shape[:2], rows.shape[2] + 1), np.uint32)
        words[..., 0] = np.take(_FIRST, rows[..., 0])
        words[..., 1:-1] = np.take(_NEXT, rows[..., 1:])
        words[..., -1] = _CLOSE_PIXEL
        words[:, -1, -1] = _CLOSE_ROW
        return words

    def chunks(self, chunk_bytes=_WRITE_CHUNK_BYTES):
        """Yields the JSON text in pieces of about `chunk_bytes`."""
        step = max(1, chunk_bytes // self._row_len)
        for start in range(0, len(self._rows), step):
            words = self._encode_rows(self._rows[start : start + step])
            pieces = []
            for i, row in enumerate(words):
                pieces += (self._separators[start + i], row.data)
            yield b"".join(pieces)
            del words, pieces
        yield self._separators[-1]


def _row_separators(lead, count):
    """What goes before each of `count` rows of an array with leading axes `lead` (each row's own
    opening bracket included), and after the last: "[[[" before the first, ",[" between rows,
    "],[[" where the inner leading axis rolls over, "]]" at the end (rows close themselves)."""
    separators = [b"[" * (len(lead) + 1)]
    for index in range(1, count):
        rolled = 0
        for size in reversed(lead):
            if index % size:
                break
            rolled += 1
            index //= size
        separators.append(b"]" * rolled + b"," + b"[" * (rolled + 1))
    separators.append(b"]" * len(lead))
    return separators


def _parts(value):
    """JSON of `value` as a list of bytes and _Uint8Json (dicts, lists, scalars, uint8 arrays)."""
    if _Uint8Json.handles(value):
        return [_Uint8Json(value)]
    if isinstance(value, np.ndarray):
        value = value.tolist()
    if isinstance(value, dict):
        parts = [b"{"]
        for i, (key, item) in enumerate(value.items()):
            parts += [b", " * (i > 0) + json.dumps(str(key)).encode() + b": ", *_parts(item)]
        return [*parts, b"}"]
    if isinstance(value, list | tuple) and any(isinstance(v, dict | np.ndarray) for v in value):
        parts = [b"["]
        for i, item in enumerate(value):
            parts += [b", " * (i > 0), *_parts(item)]
        return [*parts, b"]"]
    return [json.dumps(value).encode("utf-8")]


def encode_json(value):
    """(byte length, iterator of byte chunks) of the JSON text of `value`, encoded lazily."""
    parts = _parts(value)
    length = sum(p.length if isinstance(p, _Uint8Json) else len(p) for p in parts)

    def chunks():
        for part in parts:
            if isinstance(part, _Uint8Json):
                yield from part.chunks()
            elif part:
                yield part

    return length, chunks()


def client_gone(sock):
    """True once the peer of a connected socket has closed it (or it failed); never blocks.

    A readable socket whose next byte is end-of-file has been closed (or half-closed) by the
    client: nobody will read the answer. Pipelined bytes of a next request leave it open.
    """
    try:
        readable, _, _ = select.select([sock], [], [], 0)
        if not readable:
            return False
        return sock.recv(1, socket.MSG_PEEK | socket.MSG_DONTWAIT) == b""
    except BlockingIOError:
        return False
    except (OSError, ValueError):  # reset, or already closed here
        return True


class _DeadlineReader(io.RawIOBase):
    """The connection's reads, each bounded by what is left of the current request's deadline.

    A per-recv timeout alone would let a client hold a worker forever by sending a byte just
    before each timeout; the deadline bounds the whole request.
    """

    def __init__(self, sock):
        self._sock = sock
        self.deadline = float("inf")
        self.received = 0  # bytes of the current request read so far
        self.timed_out = False

    def start_request(self, seconds):
        self.deadline = time.monotonic() + seconds
        self.received = 0

    def readable(self):
        return True

    def readinto(self, buffer):
        remaining = self.deadline - time.monotonic()
        if remaining <= 0:
            self.timed_out = True
            raise TimeoutError("request not received within the read timeout")
        self._sock.settimeout(remaining)
        try:
            count = self._sock.recv_into(buffer)
        except TimeoutError:
            self.timed_out = True
            raise
        self.received += count
        return count


def _content_length(values):
    """The Content-Length header values -> the body size; None when there is none."""
    if not values:
        return None
    if len(set(v.strip() for v in values)) > 1 or not values[0].strip().isdigit():
        raise HttpError(400, f"Bad Content-Length header: {', '.join(values)!r}.")
    return int(values[0])


def make_handler(manager, limits=None, serving_metrics=None, monitoring_path=None):
    """An http.server handler class bound to a model_manager.ModelManager and ServerLimits.

    With `serving_metrics` (metrics.ServingMetrics), every model status and predict request is
    counted in it, and `GET monitoring_path` answers its Prometheus text (not itself counted).
    """
    limits = limits or manager.limits

    class Handler(http.server.BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"
        disable_nagle_algorithm = True  # small header writes before a streamed body

        def log_message(self, format, *args):  # noqa: A002 (the base class's name)
            pass  # One line per request on stderr would drown the server's own messages.

        def setup(self):
            super().setup()
            self._reader = _DeadlineReader(self.connection)
            self.rfile = io.BufferedReader(self._reader)
            self._unread_body = False

        def handle_one_request(self):
            """One request within read_timeout_seconds; a timed-out partial request gets 408."""
            self._reader.start_request(limits.read_timeout_seconds)
            self._replied = False
            super().handle_one_request()  # a TimeoutError there only closes the connection
            if self._reader.timed_out:
                self.close_connection = True
                if self._reader.received and not self._replied:
                    self._reply_quietly(
                        408, f"Request not received within {limits.read_timeout_seconds:g} s."
                    )

        def finish(self):
            if self._unread_body:
                self._linger()
            super().finish()

        def _linger(self):
            """Drains (a bounded part of) a body the answer was given without reading, so that
            closing does not reset the connection before the client has read that answer."""
            try:
                self.wfile.flush()
                self.connection.shutdown(socket.SHUT_WR)
                self.connection.settimeout(_LINGER_SECONDS)
                deadline, drained = time.monotonic() + _LINGER_SECONDS, 0
                while drained < _LINGER_BYTES and time.monotonic() < deadline:
                    data = self.connection.recv(65536)
                    if not data:
                        break
                    drained += len(data)
            except OSError:
                pass

        def _reply(self, status, payload):
            self._replied = True
            self.connection.settimeout(limits.read_timeout_seconds)  # a client must also read
            length, chunks = encode_json(payload)
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(length))
            if self.close_connection:
                self.send_header("Connection", "close")
            self.end_headers()
            pending = []
            size = 0
            for chunk in chunks:
                pending.append(chunk)
                size += len(chunk)
                if size >= _WRITE_CHUNK_BYTES:
                    self.wfile.write(b"".join(pending))
                    pending, size = [], 0
            self.wfile.write(b"".join(pending))

        def _reply_quietly(self, status, message):
            """An error answer on a connection that may already be gone."""
            self.close_connection = True
            try:
                self._reply(status, {"error": message})
            except OSError:
                pass

        def _route(self, want_predict):
            match = _PATH.match(self.path)
            if not match or bool(match["verb"]) != want_predict:
                raise RequestError(
                    contract.NOT_FOUND, f"Malformed request: {self.command} {self.path}"
                )
            return match["name"], match["version"] and int(match["version"])

        def _body_length(self):
            """The body's size from the headers, or HttpError when it is unknown or too big."""
            if self.headers.get_all("Transfer-Encoding"):
                raise HttpError(
                    501, "Transfer-Encoding is not supported; send the body with a Content-Length."
                )
            length = _content_length(self.headers.get_all("Content-Length"))
            if self.command == "POST" and length is None:
                raise HttpError(411, "A POST request needs a Content-Length header.")
            if length and length > limits.max_body_bytes:
                raise HttpError(
                    413,
                    f"Request body of {length} bytes is over this server's limit of "
                    f"{limits.max_body_bytes} bytes (--max_body_bytes).",
                )
            return length or 0

        def handle_expect_100(self):
            """Refuses a body before the client sends it, instead of after."""
            try:
                self._body_length()
            except HttpError as e:
                self._unread_body = True
                self._reply_quietly(e.status, e.message)
                return False
            return super().handle_expect_100()

        def _handle(self, action, predict):
            """Answers with action()'s payload, or the error status of what it raised. Errors
            while the answer is written (the client left) only end the connection.

            The request is counted in serving_metrics with the status it was answered with,
            also when the client left before reading it (CANCELLED) or was too slow
            (DEADLINE_EXCEEDED).
            """
            start = time.monotonic()
            self._signature = ""  # _predict sets the request's own once it has read it
            status = contract.INTERNAL
            try:
                payload = action()
            except HttpError as e:
                status = metrics.HTTP_STATUS_NAME.get(e.status, contract.INVALID_ARGUMENT)
                self._unread_body = True  # what follows the headers was not read
                self._reply_quietly(e.status, e.message)
            except RequestError as e:
                status = e.code
                self._reply(http_status(e), {"error": e.message})
            except TimeoutError:
                status = contract.DEADLINE_EXCEEDED
                raise  # the client is too slow: handle_one_request deals with it
            except ConnectionError:
                status = contract.CANCELLED
                raise  # the client is gone
            except MemoryError:
                status = contract.RESOURCE_EXHAUSTED
                self._reply_quietly(503, "Out of memory for this request; try a smaller one.")
            except Exception as e:  # A server bug: the server must keep serving regardless.
                self._reply_quietly(500, f"Internal error: {type(e).__name__}: {e}")
            else:
                status = contract.OK
                self._reply(200, payload)
            finally:
                self._record(predict, status, time.monotonic() - start)

        def _record(self, predict, status, seconds):
            if serving_metrics is None:
                return
            match = _PATH.match(self.path)
            model_name = match["name"] if match else ""
            if predict:
                serving_metrics.record_predict(
                    metrics.REST, model_name, self._signature, status, seconds
                )
            else:
                serving_metrics.record_request(model_name, status)

        def do_GET(self):  # noqa: N802 (http.server's naming)
            if monitoring_path and self.path.split("?", 1)[0] == monitoring_path:
                self._serve_metrics()
            else:
                self._handle(self._status, predict=False)

        def do_POST(self):  # noqa: N802
            self._handle(self._predict, predict=True)

        def _serve_metrics(self):
            """The Prometheus scrape: text, not JSON, and not itself a counted request."""
            try:
                if self._body_length():
                    self._unread_body = True
                    self.close_connection = True
            except HttpError as e:
                self._unread_body = True
                self._reply_quietly(e.status, e.message)
                return
            body = serving_metrics.exposition()
            self._replied = True
            self.connection.settimeout(limits.read_timeout_seconds)
            self.send_response(200)
            self.send_header("Content-Type", metrics.CONTENT_TYPE)
            self.send_header("Content-Length", str(len(body)))
            if self.close_connection:
                self.send_header("Connection", "close")
            self.end_headers()
            self.wfile.write(body)

        def _status(self):
            if self._body_length():
                self._unread_body = True
                self.close_connection = True  # the unread body must not be parsed as a request
            return manager.status(*self._route(want_predict=False))

        def _read_body(self):
            length = self._body_length()
            body = self.rfile.read(length)
            if len(body) < length:
                raise HttpError(400, f"The body ended after {len(body)} of {length} bytes.")
            return body

        def _predict(self):
            request = parse_json(self._read_body())
            name, version = self._route(want_predict=True)
            signature = signature_name(request)
            self._signature = signature
            servable = manager.resolve(name, version)
            inputs, request_format = parse_predict_request(
                request,
                servable.input_names(signature),
                limits.max_instances,
                string_inputs(servable, signature),
            )
            del request  # the nested lists live on in `inputs` only
            outputs = servable.predict(
                signature, inputs, is_cancelled=lambda: client_gone(self.connection)
            )
            del inputs
            return format_predict_response(outputs, request_format)

    return Handler
