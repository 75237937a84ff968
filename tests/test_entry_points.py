"""Every console script in setup.py resolves to an entry's `run`, which refuses unknown flags.

Each script is run the way its generated wrapper runs it (`from MODULE import run; run()`), in a
subprocess: the entry modules define absl flags, so two of them cannot share one process. They
import TensorFlow, so they run a few at a time.
"""

import ast
import concurrent.futures
import pathlib
import subprocess
import sys

import pytest

REPO = pathlib.Path(__file__).resolve().parents[1]
UNKNOWN_FLAG = "nonexistent_flag_xyz"
PARALLEL = 4
# What a script needs before it reads the rest of the command line: the Beam job parses its own
# and Beam's flags together once its required flags are there, as they are when a user mistypes
# an option. Absl-only entries refuse an unknown flag before checking required ones.
REQUIRED_ARGS = {"srgan-prepare": ("--hr_glob=/nonexistent/*.png", "--output_dir=/nonexistent/out")}


def console_scripts():
    """{script: "module:function"} from setup.py's CONSOLE_SCRIPTS (read, not executed)."""
    tree = ast.parse((REPO / "setup.py").read_text())
    for node in tree.body:
        if isinstance(node, ast.Assign) and [t.id for t in node.targets] == ["CONSOLE_SCRIPTS"]:
            specs = ast.literal_eval(node.value)
            return dict(spec.replace(" ", "").split("=", 1) for spec in specs)
    raise AssertionError("setup.py defines no CONSOLE_SCRIPTS")


def _run_script(target, *args):
    """Runs a console-script target as its wrapper would; returns the CompletedProcess."""
    module, function = target.split(":")
    code = f"import sys; from {module} import {function}; sys.exit({function}())"
    return subprocess.run(
        [sys.executable, "-c", code, *args],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
    )


@pytest.fixture(scope="module")
def unknown_flag_runs():
    """{script: CompletedProcess} of every script run with one unknown flag."""
    scripts = console_scripts()
    with concurrent.futures.ThreadPoolExecutor(PARALLEL) as pool:
        runs = {
            script: pool.submit(
                _run_script, target, *REQUIRED_ARGS.get(script, ()), f"--{UNKNOWN_FLAG}=1"
            )
            for script, target in scripts.items()
        }
        return {script: future.result() for script, future in runs.items()}


def test_setup_declares_a_script_per_entry():
    scripts = console_scripts()
    assert all(script.startswith("srgan-") for script in scripts)
    assert all(target.endswith(":run") for target in scripts.values()), scripts
    assert {"srgan-prepare", "srgan-train", "srgan-serve", "srgan-client"} <= set(scripts)


@pytest.mark.parametrize("script", sorted(console_scripts()))
def test_script_resolves_to_run_and_refuses_an_unknown_flag(unknown_flag_runs, script):
    result = unknown_flag_runs[script]
    output = result.stdout + result.stderr
    assert "ImportError" not in output and "ModuleNotFoundError" not in output, output[-2000:]
    assert result.returncode != 0, f"{script} accepted --{UNKNOWN_FLAG}: {output[-2000:]}"
    assert UNKNOWN_FLAG in output, output[-2000:]
