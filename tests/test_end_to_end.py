"""The `make demo` chain at toy size: a broken hand-over fails here.

Runs demo.py (sample photos -> Beam job -> pretrain -> gan -> evaluate -> export -> local
server -> REST + gRPC upscale -> side-by-side PNG) with a tiny model (1 block, 8 channels) and a
few steps, once at x4 and once with a trainer flag that must fail, the two runs side by side.
Every other scale runs the same hand-overs in process in tests/test_scales.py (a demo run costs a
dozen TensorFlow start-ups); `python -m demo --scale=3` runs it on the command line.
"""

import dataclasses
import json
import os
import pathlib
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

from data_prep import schema

REPO = pathlib.Path(__file__).resolve().parents[1]
TOY_FLAGS = "tests/e2e_toy.flags"
# The demo's stages, each with a log in OUTPUT_DIR/logs (train-<phase> added per phase).
STAGES = ("samples", "prepare", "evaluate", "export", "upscale-rest", "upscale-grpc")
# Library start-up chatter that the demo's console must not show (it stays in the logs).
CHATTER = ("oneDNN", "cpu_feature_guard", "Discarding unparseable args", "unsupported characters")


# name -> (scale, phases).
CHAINS = {"x4": (4, ("pretrain", "gan"))}
# A trainer flag no image can serve: the demo must stop at train-pretrain and say so.
BAD_FLAGS = "--flagfile=configs/quickstart.flags\n--hr_patch_size=100000\n"

# The runs share the module's time budget (pytest-timeout counts the fixture's set-up).
pytestmark = pytest.mark.timeout(900)


@dataclasses.dataclass(frozen=True)
class DemoRun:
    out: pathlib.Path
    returncode: int
    stdout: str
    stderr: str


def _start_demo(root, flagfile, *args):
    """Starts demo.py writing into root/demo; its console goes to root/stdout and root/stderr."""
    command = [sys.executable, "-m", "demo", f"--output_dir={root / 'demo'}"]
    command += [f"--train_flagfile={flagfile}", *args]
    with open(root / "stdout", "w") as out, open(root / "stderr", "w") as err:
        return subprocess.Popen(command, cwd=REPO, stdout=out, stderr=err, text=True)


def _finish(root, process):
    try:
        returncode = process.wait(timeout=800)
    except subprocess.TimeoutExpired:
        process.kill()
        raise
    stdout, stderr = (root / "stdout").read_text(), (root / "stderr").read_text()
    return DemoRun(root / "demo", returncode, stdout, stderr)


def _toy_flagfile(root, scale):
    """The toy trainer flags; HR patches must be a multiple of the scale (and of 16)."""
    if scale != 3:
        return TOY_FLAGS
    path = root / "toy_x3.flags"
    path.write_text(f"--flagfile={TOY_FLAGS}\n--hr_patch_size=48\n")
    return path


@pytest.fixture(scope="module")
def demo_runs(tmp_path_factory):
    """{name: DemoRun} for every chain in CHAINS and the "bad" one, all run side by side.

    The stages are mostly single-threaded imports and start-ups, so on 2 cores the demos
    together take little more than the longest one alone.
    """
    roots, processes = {}, {}
    for name, (scale, phases) in CHAINS.items():
        roots[name] = tmp_path_factory.mktemp(name)
        gan = "--gan" if "gan" in phases else "--nogan"
        flagfile = _toy_flagfile(roots[name], scale)
        processes[name] = _start_demo(roots[name], flagfile, f"--scale={scale}", gan)
    roots["bad"] = tmp_path_factory.mktemp("bad")
    (roots["bad"] / "bad.flags").write_text(BAD_FLAGS)
    processes["bad"] = _start_demo(roots["bad"], roots["bad"] / "bad.flags")
    return {name: _finish(roots[name], process) for name, process in processes.items()}


def check_chain(run, scale, phases):
    """Checks every hand-over of a demo run at `scale` through `phases`."""
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    _check_console(run, phases)
    _check_dataset_and_training(run.out, scale, phases)
    _check_served_images(run.out, scale)


def _check_console(run, phases):
    """One line per stage and a summary; the libraries' chatter stays in the logs."""
    assert "=== summary ===" in run.stdout
    # e2e_toy.flags asks for random features: the summary says which features the GAN used.
    assert "perceptual features: random (--perceptual_weights=none)" in run.stdout, run.stdout
    for stage in (*STAGES, *(f"train-{phase}" for phase in phases)):
        assert f" {stage} " in run.stdout, stage
    assert len(run.stdout.splitlines()) < 40, run.stdout
    for noise in CHATTER:
        assert noise not in run.stdout + run.stderr, noise


def _check_dataset_and_training(out, scale, phases):
    manifest = schema.read_manifest(str(out / "data"))
    assert manifest.scale == scale
    examples = sum(split.num_examples for split in manifest.splits.values())
    num_photos = len(os.listdir(out / "photos"))
    assert manifest.num_inputs == examples + manifest.num_rejected == num_photos
    assert manifest.splits[schema.VALIDATION].num_examples >= 1
    for phase in phases:
        assert (out / "model" / phase / "checkpoint").exists(), phase
    scores = json.loads((out / "results" / "evaluation.json").read_text())
    assert len(scores["images"]) == manifest.splits[schema.VALIDATION].num_examples
    assert scores["model"]["psnr"] > 0 and scores["bicubic"]["psnr"] > 0
    assert sorted(os.listdir(out / "export" / "srgan")) == ["1"]
    logs = set(os.listdir(out / "logs"))
    assert {f"{stage}.log" for stage in STAGES} <= logs, logs


def _check_served_images(out, scale):
    """The served model upscales by exactly `scale`, the same over REST and gRPC."""
    lr = np.asarray(Image.open(out / "requests" / "lr.png"))
    sr_rest = np.asarray(Image.open(out / "results" / "sr_rest.png"))
    sr_grpc = np.asarray(Image.open(out / "results" / "sr_grpc.png"))
    assert sr_rest.shape == (lr.shape[0] * scale, lr.shape[1] * scale, 3)
    np.testing.assert_array_equal(sr_rest, sr_grpc)  # same model, two protocols
    grid = Image.open(out / "results" / "lr_bicubic_sr.png")
    assert grid.size == (3 * sr_rest.shape[1], sr_rest.shape[0])


@pytest.mark.parametrize("name", list(CHAINS))
def test_demo_chain_hands_over(demo_runs, name):
    scale, phases = CHAINS[name]
    check_chain(demo_runs[name], scale, phases)


def test_demo_names_the_failing_stage_and_shows_its_log(demo_runs):
    run = demo_runs["bad"]
    assert run.returncode != 0
    assert "demo failed at stage 'train-pretrain'" in run.stderr
    assert f"full log: {run.out / 'logs' / 'train-pretrain.log'}" in run.stderr
    assert "100000" in run.stderr  # the trainer's own error, from the log's tail
    assert "train-gan" not in run.stdout  # nothing runs after the failed stage
