"""The `make demo` chain at toy size at x2, x3 and x4: a broken hand-over fails here.

Each test runs demo.py (sample photos -> Beam job -> pretrain [-> gan] -> evaluate -> export ->
local server -> REST + gRPC upscale -> side-by-side PNG) with a tiny model (1 block, 8 channels)
and a few steps. x4 runs both phases; x2 and x3 only pretrain (the GAN step is the same code at
every scale) to keep the file's time small.
"""

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


def _run_demo(output_dir, flagfile, *args):
    return subprocess.run(
        [
            sys.executable,
            "-m",
            "demo",
            f"--output_dir={output_dir}",
            f"--train_flagfile={flagfile}",
            *args,
        ],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=600,
    )


def _toy_flagfile(tmp_path, scale):
    """The toy trainer flags; HR patches must be a multiple of the scale (and of 16)."""
    if scale != 3:
        return TOY_FLAGS
    path = tmp_path / "toy_x3.flags"
    path.write_text(f"--flagfile={TOY_FLAGS}\n--hr_patch_size=48\n")
    return path


def run_chain(tmp_path, scale, phases):
    """Runs the demo at `scale` through `phases`; checks every hand-over. Returns the output dir."""
    out = tmp_path / "demo"
    gan = "--gan" if "gan" in phases else "--nogan"
    result = _run_demo(out, _toy_flagfile(tmp_path, scale), f"--scale={scale}", gan)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    _check_console(result, phases)
    _check_dataset_and_training(out, scale, phases)
    _check_served_images(out, scale)
    return out


def _check_console(result, phases):
    """One line per stage and a summary; the libraries' chatter stays in the logs."""
    assert "=== summary ===" in result.stdout
    for stage in (*STAGES, *(f"train-{phase}" for phase in phases)):
        assert f" {stage} " in result.stdout, stage
    assert len(result.stdout.splitlines()) < 40, result.stdout
    for noise in CHATTER:
        assert noise not in result.stdout + result.stderr, noise


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


def test_demo_chain_x4_both_phases(tmp_path):
    run_chain(tmp_path, 4, ("pretrain", "gan"))


@pytest.mark.parametrize("scale", [2, 3])
def test_demo_chain_pretrain_only(tmp_path, scale):
    run_chain(tmp_path, scale, ("pretrain",))


def test_demo_names_the_failing_stage_and_shows_its_log(tmp_path):
    bad_flags = tmp_path / "bad.flags"
    bad_flags.write_text("--flagfile=configs/quickstart.flags\n--hr_patch_size=100000\n")
    out = tmp_path / "demo"
    result = _run_demo(out, bad_flags)
    assert result.returncode != 0
    assert "demo failed at stage 'train-pretrain'" in result.stderr
    log = out / "logs" / "train-pretrain.log"
    assert f"full log: {log}" in result.stderr
    assert "100000" in result.stderr  # the trainer's own error, from the log's tail
    assert "train-gan" not in result.stdout  # nothing runs after the failed stage
