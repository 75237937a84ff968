"""What every entry point shares: a readable console.

Call `quiet_console()` at the top of an entry module, before TensorFlow, Beam or gRPC is
imported: it hides their start-up chatter (C++ INFO/WARNING logs, per-op and all-reduce notices)
so the console shows the project's own progress and real warnings. SRGAN_VERBOSE=1 in the
environment brings everything back. The settings are environment variables, so subprocesses (the
demo's stages, the local server) inherit them.
"""

import logging
import os

VERBOSE_ENV = "SRGAN_VERBOSE"


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
