"""What every entry point shares: a readable console.

Call `quiet_console()` at the top of an entry module, before TensorFlow, Beam or gRPC is
imported: it hides their start-up chatter (C++ INFO/WARNING logs, per-op and all-reduce notices)
so the console shows the project's own progress and real warnings. SRGAN_VERBOSE=1 in the
environment brings everything back. The settings are environment variables, so subprocesses (the
demo's stages, the local server) inherit them.
"""

import contextlib
import logging
import os
import sys
import threading

VERBOSE_ENV = "SRGAN_VERBOSE"
# What TensorFlow 2.21's C++ side prints while it loads and finds its devices. It logs through
# absl before absl::InitializeLog() runs, so TF_CPP_MIN_LOG_LEVEL does not reach these lines.
_TF_STARTUP_NOISE = (
    "All log messages before absl::InitializeLog()",
    "oneDNN custom operations are on",
    "cudart_stub.cc",
    "cuda_platform.cc",
    "Could not find cuda drivers",
    "Unable to register cu",
    "TF-TRT Warning",
    "This TensorFlow binary is optimized",
    "computation placer already registered",
)


def verbose():
    """True when the user asked for the libraries' full logging (SRGAN_VERBOSE=1)."""
    return os.environ.get(VERBOSE_ENV, "").strip().lower() in ("1", "true", "yes")


def quiet_console():
    """Hides TensorFlow's, gRPC's and Beam's start-up and INFO chatter (not their errors)."""
    if verbose():
        return
    # TensorFlow's C++ logs: 2 keeps errors, hides INFO (oneDNN, CPU features) and WARNING.
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    os.environ.setdefault("GRPC_VERBOSITY", "ERROR")
    # Python loggers of the libraries: warnings and errors only.
    for name in ("tensorflow", "apache_beam", "keras", "h5py", "PIL"):
        logging.getLogger(name).setLevel(logging.WARNING)


@contextlib.contextmanager
def stderr_without(noise):
    """Passes file descriptor 2 through a filter that drops every line containing one of `noise`.

    C++ libraries and child processes write to fd 2 directly, past sys.stderr and the logging
    module, so the filter sits on the descriptor: a pipe whose reader thread forwards every other
    line as it arrives (real errors still show, in order). Children started inside the block
    inherit the filtered descriptor.
    """
    sys.stderr.flush()
    original = os.dup(2)
    forward = os.dup(original)  # owned by the reader thread
    read_end, write_end = os.pipe()
    os.dup2(write_end, 2)
    os.close(write_end)

    def pump():
        with os.fdopen(read_end, "rb") as pipe:
            for line in pipe:
                if not any(marker in line.decode("utf-8", "replace") for marker in noise):
                    os.write(forward, line)
        os.close(forward)

    reader = threading.Thread(target=pump, name="stderr-filter", daemon=True)
    reader.start()
    try:
        yield
    finally:
        sys.stderr.flush()
        os.dup2(original, 2)  # closes this process's write end: the reader sees EOF
        os.close(original)
        reader.join(timeout=10)


def import_tensorflow():
    """Imports TensorFlow and finds its devices without the start-up chatter (see quiet_console).

    Entry points that need TensorFlow call this once, after quiet_console() and before anything
    else imports it; logical devices can still be configured afterwards.
    """
    if verbose():
        import tensorflow as tf  # noqa: PLC0415

        return tf
    with stderr_without(_TF_STARTUP_NOISE):
        import tensorflow as tf  # noqa: PLC0415

        tf.config.list_physical_devices()  # device discovery logs the CUDA notices
    return tf
