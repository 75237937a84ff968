"""Loads the newest SavedModel version of one model and runs its signatures (TF Serving semantics).

Like tensorflow_model_server's default "latest" version policy, the newest integer version under
the model base path is served, a newer one is picked up by polling, and requests name an error
with a TF Serving status code (INVALID_ARGUMENT, NOT_FOUND) rather than raising raw TF errors.

Every input is checked against its signature (dtype, shape) and the server's limits.ServerLimits
(instances, pixels) before an array of its full size exists, whether it comes as a TensorProto
(gRPC, warmup records) or as nested JSON lists (REST): a request cannot make the server allocate
more than it declares, nor have its values converted silently (300 wrapping to 44 in uint8).
"""

import dataclasses
import logging
import math
import posixpath
import re
import threading
import time

import numpy as np
import tensorflow as tf
from tensorflow.python.eager import cancellation  # TF has no public way to cancel a call
from tensorflow_serving.apis import prediction_log_pb2

from serving import contract, versions
from serving.limits import ServerLimits

# How often a running signature asks whether its client is still there.
CANCEL_POLL_SECONDS = 0.05
# A version that failed to load is retried when its files change, else after this back-off,
# doubled on every further failure up to MAX_RETRY_SECONDS.
RETRY_SECONDS = 30.0
MAX_RETRY_SECONDS = 600.0


class RequestError(Exception):
    """A request the server answers with an error status; `code` is a TF Serving status name."""

    def __init__(self, code, message):
        super().__init__(message)
        self.code = code
        self.message = message


def _invalid(message):
    return RequestError(contract.INVALID_ARGUMENT, message)


@dataclasses.dataclass(frozen=True)
class _Failure:
    """A version that failed to load, and when to try it again.

    Attributes:
      version: the version number.
      fingerprint: its files (see _fingerprint) when the attempt failed.
      seen: its files at the last poll; a retry waits until they stop changing (a copy running).
      retry_at: time.monotonic() after which it is retried even if its files did not change.
      attempts: failed attempts so far.
    """

    version: int
    fingerprint: tuple
    seen: tuple
    retry_at: float
    attempts: int


class ModelManager:
    """Serves the newest version of `model_name` found under `model_base_path`."""

    def __init__(
        self,
        model_base_path,
        model_name,
        poll_seconds=1.0,
        warmup=True,
        limits=None,
        retry_seconds=RETRY_SECONDS,
    ):
        self.model_base_path = model_base_path
        self.model_name = model_name
        self.limits = limits or ServerLimits()
        self._poll_seconds = poll_seconds
        self._warmup = warmup
        self._retry_seconds = retry_seconds
        self._lock = threading.Lock()
        self._version = None
        self._model = None
        self._failure = None  # the newest version, if it failed to load (see _should_try)
        self._stop = threading.Event()
        self._poller = None

    @property
    def version(self):
        return self._version

    def load_newest(self):
        """Loads the newest version if newer than the served one; returns the served version.

        A version that failed to load is tried again once its files changed and then stayed the
        same for one poll (a version directory created empty and filled by `cp -r` or rsync), or
        after a back-off; not on every poll.

        Raises:
          Exception: whatever loading the newest version raised (it is not retried at once).
        """
        present = versions.list_versions(self.model_base_path)
        if not present or present[-1] == self._version:
            return self._version
        version = present[-1]
        export_dir = posixpath.join(self.model_base_path, str(version))
        fingerprint = _fingerprint(export_dir)
        if not self._should_try(version, fingerprint):
            return self._version
        try:
            model = tf.saved_model.load(export_dir)
            if self._warmup:
                self._run_warmup(model, export_dir)
        except Exception:
            self._record_failure(version, fingerprint)
            raise
        with self._lock:
            self._version, self._model = version, model
        self._failure = None
        logging.info(
            "Serving %s version %d (%s) from %s",
            self.model_name,
            version,
            _describe(export_dir),
            export_dir,
        )
        return version

    def _should_try(self, version, fingerprint):
        failure = self._failure
        if failure is None or failure.version != version:
            return True
        if fingerprint != failure.fingerprint:
            settled = fingerprint == failure.seen
            self._failure = dataclasses.replace(failure, seen=fingerprint)
            return settled
        return time.monotonic() >= failure.retry_at

    def _record_failure(self, version, fingerprint):
        previous = self._failure
        attempts = previous.attempts + 1 if previous and previous.version == version else 1
        backoff = min(self._retry_seconds * 2 ** (attempts - 1), MAX_RETRY_SECONDS)
        self._failure = _Failure(
            version, fingerprint, fingerprint, time.monotonic() + backoff, attempts
        )

    def retry_plan(self):
        """Why the newest version is not served, for a log line (empty if none failed)."""
        failure = self._failure
        if failure is None:
            return ""
        seconds = max(0.0, failure.retry_at - time.monotonic())
        return (
            f"version {failure.version} failed {failure.attempts} time(s); it is tried again "
            f"when its files change, or in {seconds:.0f} s"
        )

    def _run_warmup(self, model, export_dir):
        path = posixpath.join(export_dir, contract.WARMUP_FILE)
        if not tf.io.gfile.exists(path):
            return
        for record in tf.data.TFRecordDataset(path):
            log = prediction_log_pb2.PredictionLog.FromString(record.numpy())
            request = log.predict_log.request
            signature = request.model_spec.signature_name or contract.BYTES_SIGNATURE
            specs = input_specs(model, signature)
            check_input_names(signature, specs, request.inputs)
            inputs = {
                name: array_from_proto(name, proto, specs[name], self.limits)
                for name, proto in request.inputs.items()
            }
            _run_signature(model, signature, inputs, self.limits)

    def start_polling(self):
        """Polls for newer versions in a daemon thread until stop()."""
        self._poller = threading.Thread(target=self._poll, name="version-poller", daemon=True)
        self._poller.start()

    def try_load_newest(self):
        """load_newest() that logs a failure instead of raising (the start and every poll)."""
        try:
            self.load_newest()
        except Exception as e:  # A broken new version must not take down the one being served.
            # One line per failed attempt; attempts are rare (see load_newest).
            logging.warning(
                "Could not load a new version of %s: %s: %s; %s.",
                self.model_name,
                type(e).__name__,
                _first_line(e),
                self.retry_plan() or "tried again at the next poll",
            )

    def _poll(self):
        while not self._stop.wait(self._poll_seconds):
            self.try_load_newest()

    def stop(self):
        self._stop.set()
        if self._poller:
            self._poller.join()

    def status(self, model_name, version=None):
        """TF Serving's GetModelStatus answer as a dict (the REST GET /v1/models/<name> body)."""
        served = self.resolve(model_name, version).version
        return {
            "model_version_status": [
                {
                    "version": str(served),
                    "state": contract.AVAILABLE,
                    "status": {"error_code": contract.OK, "error_message": ""},
                }
            ]
        }

    def resolve(self, model_name, version=None):
        """The Servable a request names; one request uses one Servable throughout, so a version
        loaded meanwhile cannot change the model between parsing and running the request."""
        with self._lock:
            served, model = self._version, self._model
        if model_name != self.model_name:
            raise RequestError(
                contract.NOT_FOUND, f"Servable not found for request: Latest({model_name})"
            )
        if model is None:
            raise RequestError(
                contract.NOT_FOUND,
                f"No version of {model_name} is loaded yet (none under {self.model_base_path}).",
            )
        if version is not None and int(version) != served:
            raise RequestError(
                contract.NOT_FOUND,
                f"Servable not found for request: "
                f"Specific({model_name}, {version}); serving {served}.",
            )
        return Servable(served, model, self.limits)

    def predict(self, model_name, version, signature_name, inputs, is_cancelled=None):
        """Runs a signature: (served version, {output name: numpy array}). See Servable.predict."""
        servable = self.resolve(model_name, version)
        return servable.version, servable.predict(signature_name, inputs, is_cancelled)


def _fingerprint(export_dir):
    """(relative path, size, mtime) of everything under a version directory, sorted.

    Cheap (no file is read) and changes while a copy into the directory is under way.
    """
    entries = []
    for directory, subdirs, files in tf.io.gfile.walk(export_dir):
        for name in subdirs + files:
            path = posixpath.join(directory, name)
            try:
                stat = tf.io.gfile.stat(path)
            except tf.errors.NotFoundError:  # removed meanwhile: the next poll sees it
                continue
            entries.append((posixpath.relpath(path, export_dir), stat.length, stat.mtime_nsec))
    return tuple(sorted(entries))


def _first_line(error):
    text = str(error).strip()
    return text.splitlines()[0] if text else ""


def _describe(export_dir):
    """ "x4, srresnet 16 blocks x 64" from the export's metadata (or why there is none)."""
    try:
        metadata = versions.read_metadata(export_dir)
    except (FileNotFoundError, ValueError):
        return "no export metadata"
    generator = metadata["generator"]
    return (
        f"x{metadata['scale']}, {generator.get('num_blocks')} blocks x "
        f"{generator.get('channels')} channels"
    )


@dataclasses.dataclass(frozen=True)
class Servable:
    """One loaded version, and the limits its requests are checked against.

    A signature name of None or "" means serving_default.
    """

    version: int
    model: object
    limits: ServerLimits = ServerLimits()

    def input_names(self, signature_name):
        """Sorted input names of a signature."""
        return sorted(self.input_specs(signature_name))

    def input_specs(self, signature_name):
        """{input name: tf.TensorSpec} of a signature."""
        return input_specs(self.model, signature_name or contract.BYTES_SIGNATURE)

    def predict(self, signature_name, inputs, is_cancelled=None):
        """Runs a signature on inputs (name -> numpy array or nested lists, as parsed from JSON;
        strings as bytes, or object arrays of bytes).

        Args:
          signature_name: the signature; None or "" is serving_default.
          inputs: {input name: value}; each is checked against its spec and self.limits.
          is_cancelled: if given, polled every CANCEL_POLL_SECONDS while the signature runs;
            once it returns True (the client went away) the computation is stopped.

        Raises:
          RequestError: unknown signature, bad inputs, a graph error, or contract.CANCELLED.
        """
        return _run_signature(
            self.model,
            signature_name or contract.BYTES_SIGNATURE,
            inputs,
            self.limits,
            is_cancelled,
        )


def input_specs(model, signature_name):
    if signature_name not in model.signatures:
        raise RequestError(
            contract.INVALID_ARGUMENT,
            f'Serving signature name: "{signature_name}" not '
            f"found in signature def; available: "
            f"{sorted(model.signatures.keys())}",
        )
    return model.signatures[signature_name].structured_input_signature[1]


def check_input_names(signature_name, specs, names):
    """INVALID_ARGUMENT unless a request names exactly the signature's inputs."""
    if set(names) != set(specs):
        raise _invalid(
            f"Signature {signature_name} takes inputs {sorted(specs)}, got {sorted(names)}."
        )


# --- Checks on what a request declares, before anything of that size exists. ---


def check_dtype(name, dtype, spec):
    """INVALID_ARGUMENT unless an input's declared dtype is exactly the signature's.

    No conversion: TF Serving casts nothing either, and numpy would wrap 300 to 44 in uint8 or
    truncate 1.7 to 1.
    """
    if dtype != spec.dtype:
        raise _invalid(
            f"Input '{name}' has dtype {dtype.name}; the signature expects {spec.dtype.name} "
            f"(values are not converted)."
        )


def check_shape(name, shape, spec, limits):
    """INVALID_ARGUMENT unless a declared shape fits the signature and the server's limits.

    Args:
      name: the input's name, for the message.
      shape: the declared dimensions (Python ints, so that their product cannot overflow).
      spec: the signature's tf.TensorSpec for the input.
      limits: a ServerLimits; dimension 0 of a batched input is its number of instances, and
        N * H * W of an image batch [N, H, W, C] is bounded by max_request_pixels.
    """
    shape = [int(d) for d in shape]
    if any(d < 0 for d in shape) or not spec.shape.is_compatible_with(shape):
        raise _invalid(f"Input '{name}' has shape {shape}; the signature expects {spec.shape}.")
    if shape and shape[0] > limits.max_instances:
        raise _invalid(
            f"Input '{name}' has {shape[0]} instances; this server accepts at most "
            f"max_instances={limits.max_instances} per request."
        )
    if len(shape) == 4 and math.prod(shape[:3]) > limits.max_request_pixels:
        raise _invalid(
            f"Input '{name}' of shape {shape} has {math.prod(shape[:3])} pixels (N * H * W); "
            f"this server accepts at most max_request_pixels={limits.max_request_pixels} "
            f"per request."
        )


# --- TensorProto (gRPC, warmup records) -> numpy, checked before it is materialised. ---

# dtype -> the TensorProto field holding its values when tensor_content is empty.
_VALUE_FIELDS = {
    tf.string: "string_val",
    tf.bool: "bool_val",
    tf.uint8: "int_val",
    tf.int8: "int_val",
    tf.uint16: "int_val",
    tf.int16: "int_val",
    tf.int32: "int_val",
    tf.int64: "int64_val",
    tf.uint32: "uint32_val",
    tf.uint64: "uint64_val",
    tf.float32: "float_val",
    tf.float64: "double_val",
}


def array_from_proto(name, proto, spec, limits):
    """A request's TensorProto -> numpy array, refused unless it is exactly what it declares.

    Replaces tf.make_ndarray, which materialises the declared shape before anything can look at
    it (65 bytes declaring [1, 16384, 16384, 3] with one int_val became 1.5 GiB) and, like TF
    Serving, repeats the last value to fill the shape. Here, before any array is built: the dtype
    must be the signature's, the shape must fit the signature and `limits`, and the number of
    values must equal the declared element count (a mismatch is refused, never replicated). Values
    sent as int_val must fit the dtype (300 is not a uint8).

    Raises:
      RequestError: INVALID_ARGUMENT naming the input.
    """
    try:
        dtype = tf.dtypes.as_dtype(proto.dtype)
    except TypeError:
        raise _invalid(f"Input '{name}' has an unknown dtype (enum {proto.dtype}).") from None
    check_dtype(name, dtype, spec)
    if proto.tensor_shape.unknown_rank:
        raise _invalid(f"Input '{name}' has an unknown rank; the signature expects {spec.shape}.")
    shape = [d.size for d in proto.tensor_shape.dim]
    check_shape(name, shape, spec, limits)
    count = math.prod(shape)
    field = _VALUE_FIELDS.get(dtype)
    if field is None:
        raise _invalid(f"Input '{name}': dtype {dtype.name} is not supported by this server.")
    values = getattr(proto, field)
    if proto.tensor_content and dtype != tf.string:
        if len(values):
            raise _invalid(f"Input '{name}' sets both tensor_content and {field}.")
        return _from_content(name, proto.tensor_content, dtype, shape, count)
    if len(values) != count:
        raise _invalid(
            f"Input '{name}' declares shape {shape} ({count} values) but holds {len(values)} "
            f"in {field}; values are not repeated to fill a shape."
        )
    if dtype == tf.string:
        array = np.empty(count, dtype=object)
        array[:] = list(values)
        return array.reshape(shape)
    return _checked_values(name, values, dtype).reshape(shape)


def _from_content(name, content, dtype, shape, count):
    itemsize = np.dtype(dtype.as_numpy_dtype).itemsize
    if len(content) != count * itemsize:
        raise _invalid(
            f"Input '{name}' declares shape {shape} ({count * itemsize} bytes of "
            f"{dtype.name}) but its tensor_content has {len(content)} bytes."
        )
    return np.frombuffer(content, dtype=dtype.as_numpy_dtype).reshape(shape)


def _checked_values(name, values, dtype):
    """A repeated proto field -> array of `dtype`; int_val carries small ints as int32."""
    numpy_dtype = np.dtype(dtype.as_numpy_dtype)
    if numpy_dtype.kind not in "iu" or numpy_dtype.itemsize >= 4:
        return np.asarray(values, dtype=numpy_dtype)
    wide = np.asarray(values, dtype=np.int64)
    info = np.iinfo(numpy_dtype)
    if wide.size and (wide.min() < info.min or wide.max() > info.max):
        raise _invalid(
            f"Input '{name}' has values from {wide.min()} to {wide.max()}; "
            f"{dtype.name} holds {info.min}..{info.max}."
        )
    return wide.astype(numpy_dtype)


# --- Nested lists (REST JSON) and numpy arrays -> tf.Tensor. ---

# What JSON calls the Python types json.loads produces, for messages.
_JSON_TYPE_NAMES = {
    type(None): "null",
    bool: "a boolean",
    int: "an integer",
    float: "a number with a fraction or exponent",
    str: "a string",
    bytes: "a string",
    list: "a list (ragged nesting)",
    dict: "an object",
}


def _nested_shape(name, value, spec):
    """The shape nested lists declare along their first elements, at most the spec's rank deep
    (a list nested thousands of levels deep is refused here, not by a RecursionError)."""
    max_rank = spec.shape.rank if spec.shape.rank is not None else 32
    shape = []
    while isinstance(value, list):
        if len(shape) == max_rank:
            raise _invalid(
                f"Input '{name}' is nested deeper than the signature's shape {spec.shape}."
            )
        shape.append(len(value))
        if not value:
            break
        value = value[0]
    return shape


def _leaf_names(array):
    kinds = {_JSON_TYPE_NAMES.get(t, t.__name__) for t in set(map(type, array.flat))}
    return ", ".join(sorted(kinds))


def _from_nested(name, value, spec, limits):
    """Nested lists -> numpy array of the spec's dtype: shape and limits first, then every value
    must be of the input's type (bytes for strings, integers in range for integer dtypes)."""
    shape = _nested_shape(name, value, spec)
    check_shape(name, shape, spec, limits)
    try:
        objects = np.array(value, dtype=object)
    except (ValueError, TypeError, RuntimeError, RecursionError):
        objects = None
    if objects is None or list(objects.shape) != shape:
        raise _invalid(
            f"Input '{name}' is ragged: its lists do not all have the lengths of the first ones "
            f"{shape}."
        )
    if spec.dtype == tf.string:
        if any(type(v) is not bytes for v in objects.flat):
            raise _invalid(
                f"Input '{name}' must hold strings (or {{\"b64\": ...}} values); it holds "
                f"{_leaf_names(objects)}."
            )
        return objects
    numpy_dtype = np.dtype(spec.dtype.as_numpy_dtype)
    want = int if numpy_dtype.kind in "iu" else (bool if numpy_dtype.kind == "b" else float)
    allowed = {int, float} if want is float else {want}
    if objects.size and not set(map(type, objects.flat)) <= allowed:
        raise _invalid(
            f"Input '{name}' has dtype {spec.dtype.name}; its values must be "
            f"{_JSON_TYPE_NAMES[want]}s, it holds {_leaf_names(objects)}."
        )
    if want is not int:
        return objects.astype(numpy_dtype)
    info = np.iinfo(numpy_dtype)
    try:
        wide = objects.astype(np.int64 if numpy_dtype.kind == "i" else np.uint64)
    except OverflowError:
        wide = None
    if wide is None or (wide.size and (wide.min() < info.min or wide.max() > info.max)):
        raise _invalid(
            f"Input '{name}' has values outside {info.min}..{info.max}, the range of "
            f"{spec.dtype.name} (values are not converted)."
        )
    return wide.astype(numpy_dtype)


def _from_array(name, array, spec, limits):
    """A numpy array (from array_from_proto, or a caller in this process): dtype and limits."""
    if spec.dtype == tf.string:
        if array.dtype != object or any(type(v) is not bytes for v in array.flat):
            raise _invalid(f"Input '{name}' must be an array of bytes; got {array.dtype}.")
    else:
        check_dtype(name, tf.dtypes.as_dtype(array.dtype), spec)
    check_shape(name, array.shape, spec, limits)
    return array


def _to_tensor(name, value, spec, limits):
    if isinstance(value, np.ndarray):
        array = _from_array(name, value, spec, limits)
    else:
        array = _from_nested(name, value, spec, limits)
    return tf.constant(array, dtype=spec.dtype)


# --- Running a signature, cancellable. ---

_thread_cancellation = threading.local()


def _install_per_thread_cancellation():
    """Makes TF's cancellation context per thread.

    TF 2.21 runs a function call under a CancellationManager found in one process-wide global
    (tensorflow/python/eager/cancellation.py, read by context.call_function), so two requests
    computing at once would share it: one client going away would cancel the other's request.
    The context is looked up through `cancellation.context()` on every call; this replaces that
    function by one that answers this thread's manager first, and TF's own global otherwise.
    """
    tf_context = cancellation.context
    if getattr(tf_context, "per_thread", False):
        return

    def context():
        return getattr(_thread_cancellation, "manager", None) or tf_context()

    context.per_thread = True
    cancellation.context = context


_install_per_thread_cancellation()


def _watch(is_cancelled, manager, done):
    while not done.wait(CANCEL_POLL_SECONDS):
        if is_cancelled():
            manager.start_cancel()
            return


def _call(function, tensors, is_cancelled):
    """function(**tensors); cancelled (tf.errors.CancelledError) once is_cancelled() is True."""
    if is_cancelled is None:
        return function(**tensors)
    manager = cancellation.CancellationManager()
    done = threading.Event()
    watcher = threading.Thread(
        target=_watch, args=(is_cancelled, manager, done), name="cancel-watch", daemon=True
    )
    watcher.start()
    _thread_cancellation.manager = manager
    try:
        return function(**tensors)
    finally:
        _thread_cancellation.manager = None
        done.set()
        watcher.join()


def _run_signature(model, signature_name, inputs, limits, is_cancelled=None):
    specs = input_specs(model, signature_name)
    check_input_names(signature_name, specs, inputs)
    tensors = {name: _to_tensor(name, inputs[name], specs[name], limits) for name in specs}
    if is_cancelled is not None and is_cancelled():
        raise _cancelled()
    try:
        outputs = _call(model.signatures[signature_name], tensors, is_cancelled)
    except tf.errors.InvalidArgumentError as e:
        raise RequestError(contract.INVALID_ARGUMENT, _short_message(e)) from None
    except tf.errors.CancelledError:
        raise _cancelled() from None
    except tf.errors.OpError as e:
        raise RequestError(contract.INTERNAL, _short_message(e)) from None
    return {name: value.numpy() for name, value in outputs.items()}


def _cancelled():
    return RequestError(
        contract.CANCELLED,
        "The client went away (cancelled, or past its deadline); computation stopped.",
    )


def _short_message(error):
    """The line of a graph error that names the problem (not the node trace around it)."""
    lines = [line for line in error.message.split("\n") if line.strip()]
    for i, line in enumerate(lines):
        if line.lstrip().startswith("[[") and i > 0:
            return lines[i - 1].strip()
    return re.sub(r"\s*\[Op:\S+\]$", "", lines[-1].strip()) if lines else str(error)
