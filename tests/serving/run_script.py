"""Runs a Python snippet with arguments in a fresh interpreter: `python -m tests.serving.run_script
CODE ARG...` (sys.argv[1:] are the arguments). Used to load exports in a clean process."""

import sys

if __name__ == "__main__":
    code = sys.argv[1]
    sys.argv = sys.argv[1:]
    exec(compile(code, "<test snippet>", "exec"))  # noqa: S102 (test helper)
