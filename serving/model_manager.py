"""Loads the newest SavedModel version of one model and runs its signatures (TF Serving semantics).

Like tensorflow_model_server's default "latest" version policy, the newest integer version under
the model base path is served, a newer one is picked up by polling, and requests name an error
with a TF Serving status code (INVALID_ARGUMENT, NOT_FOUND) rather than raising raw TF errors.
"""

import dataclasses
import logging
import posixpath
import re
import threading

import numpy as np
import tensorflow as tf
from tensorflow_serving.apis import prediction_log_pb2

from serving import contract, versions
from serving.limits import ServerLimits


class RequestError(Exception):
    """A request the server answers with an error status; `code` is a TF Serving status name."""

    def __init__(self, code, message):
        super().__init__(message)
        self.code = code
        self.message = message


class ModelManager:
    """Serves the newest version of `model_name` found under `model_base_path`."""

    def __init__(self, model_base_path, model_name, poll_seconds=1.0, warmup=True, limits=None):
        self.model_base_path = model_base_path
        self.model_name = model_name
        self.limits = limits or ServerLimits()
        self._poll_seconds = poll_seconds
        self._warmup = warmup
        self._lock = threading.Lock()
        self._version = None
        self._model = None
        self._failed_version = None  # a version that failed to load is not retried every poll
        self._stop = threading.Event()
        self._poller = None

    @property
    def version(self):
        return self._version

    def load_newest(self):
        """Loads the newest version if newer than the served one; returns the served version."""
        present = versions.list_versions(self.model_base_path)
        if not present or present[-1] in (self._version, self._failed_version):
            return self._version
        version = present[-1]
        export_dir = posixpath.join(self.model_base_path, str(version))
        try:
            model = tf.saved_model.load(export_dir)
            if self._warmup:
                self._run_warmup(model, export_dir)
        except Exception:
            self._failed_version = version
            raise
        with self._lock:
            self._version, self._model = version, model
        logging.info(
            "Serving %s version %d (%s) from %s",
            self.model_name,
            version,
            _describe(export_dir),
            export_dir,
        )
        return version

    def _run_warmup(self, model, export_dir):
        path = posixpath.join(export_dir, contract.WARMUP_FILE)
        if not tf.io.gfile.exists(path):
            return
        for record in tf.data.TFRecordDataset(path):
            log = prediction_log_pb2.PredictionLog.FromString(record.numpy())
            request = log.predict_log.request
            inputs = {k: tf.make_ndarray(v) for k, v in request.inputs.items()}
            _run_signature(
                model, request.model_spec.signature_name or contract.BYTES_SIGNATURE, inputs
            )

    def start_polling(self):
        """Polls for newer versions in a daemon thread until stop()."""
        self._poller = threading.Thread(target=self._poll, name="version-poller", daemon=True)
        self._poller.start()

    def _poll(self):
        while not self._stop.wait(self._poll_seconds):
            try:
                self.load_newest()
            except Exception:  # A broken new version must not take down the one being served.
                logging.exception("Could not load a new version of %s", self.model_name)

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
        return Servable(served, model)

    def predict(self, model_name, version, signature_name, inputs):
        """Runs a signature: (served version, {output name: numpy array}). See Servable.predict."""
        servable = self.resolve(model_name, version)
        return servable.version, servable.predict(signature_name, inputs)


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
    """One loaded version. A signature name of None or "" means serving_default."""

    version: int
    model: object

    def input_names(self, signature_name):
        """Sorted input names of a signature."""
        return sorted(input_specs(self.model, signature_name or contract.BYTES_SIGNATURE))

    def predict(self, signature_name, inputs, is_cancelled=None):
        """Runs a signature on inputs (name -> numpy array; strings as object arrays of bytes).

        `is_cancelled`, if given, is a callable polled while the signature runs; once it returns
        True (the client went away) the computation may be abandoned.

        Raises:
          RequestError: unknown signature, bad inputs, or a graph error.
        """
        return _run_signature(self.model, signature_name or contract.BYTES_SIGNATURE, inputs)


def input_specs(model, signature_name):
    if signature_name not in model.signatures:
        raise RequestError(
            contract.INVALID_ARGUMENT,
            f'Serving signature name: "{signature_name}" not '
            f"found in signature def; available: "
            f"{sorted(model.signatures.keys())}",
        )
    return model.signatures[signature_name].structured_input_signature[1]


def _to_tensor(name, value, spec):
    try:
        array = np.asarray(
            value, dtype=object if spec.dtype == tf.string else spec.dtype.as_numpy_dtype
        )
    except (ValueError, TypeError, OverflowError) as e:
        raise RequestError(
            contract.INVALID_ARGUMENT, f"Input '{name}' cannot be read as {spec.dtype.name}: {e}"
        ) from None
    if not spec.shape.is_compatible_with(array.shape):
        raise RequestError(
            contract.INVALID_ARGUMENT,
            f"Input '{name}' has shape {list(array.shape)}; the signature expects {spec.shape}.",
        )
    return tf.constant(array, dtype=spec.dtype)


def _run_signature(model, signature_name, inputs):
    specs = input_specs(model, signature_name)
    if set(inputs) != set(specs):
        raise RequestError(
            contract.INVALID_ARGUMENT,
            f"Signature {signature_name} takes inputs {sorted(specs)}, got {sorted(inputs)}.",
        )
    tensors = {name: _to_tensor(name, inputs[name], specs[name]) for name in specs}
    try:
        outputs = model.signatures[signature_name](**tensors)
    except tf.errors.InvalidArgumentError as e:
        raise RequestError(contract.INVALID_ARGUMENT, _short_message(e)) from None
    except tf.errors.OpError as e:
        raise RequestError(contract.INTERNAL, _short_message(e)) from None
    return {name: value.numpy() for name, value in outputs.items()}


def _short_message(error):
    """The line of a graph error that names the problem (not the node trace around it)."""
    lines = [line for line in error.message.split("\n") if line.strip()]
    for i, line in enumerate(lines):
        if line.lstrip().startswith("[[") and i > 0:
            return lines[i - 1].strip()
    return re.sub(r"\s*\[Op:\S+\]$", "", lines[-1].strip()) if lines else str(error)
