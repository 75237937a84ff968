"""srgan_cli: an entry's console shows no TensorFlow start-up chatter, unless SRGAN_VERBOSE=1."""

import os
import subprocess
import sys

_SCRIPT = (
    "import srgan_cli; srgan_cli.quiet_console(); tf = srgan_cli.import_tensorflow(); "
    "import sys; print('real warning', file=sys.stderr); print(int(tf.constant(1) + 1))"
)


def _run(verbose):
    env = {k: v for k, v in os.environ.items() if not k.startswith(("TF_CPP", "SRGAN_VERBOSE"))}
    if verbose:
        env["SRGAN_VERBOSE"] = "1"
    return subprocess.run(
        [sys.executable, "-c", _SCRIPT], env=env, capture_output=True, text=True, check=True
    )


def test_quiet_entry_shows_only_its_own_lines():
    done = _run(verbose=False)
    assert done.stdout.strip() == "2"
    assert done.stderr.strip() == "real warning"


def test_verbose_brings_the_chatter_back():
    done = _run(verbose=True)
    assert "oneDNN" in done.stderr
    assert "real warning" in done.stderr
