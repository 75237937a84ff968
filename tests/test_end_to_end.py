"""The `make demo` chain at toy size: a change that breaks a hand-over between stages fails here.

Runs demo.py (sample photos -> Beam job -> pretrain -> gan -> evaluate -> export -> local server ->
REST + gRPC upscale -> side-by-side PNG) with a tiny model and a few steps.
"""

import json
import os
import pathlib
import subprocess
import sys

import numpy as np
from PIL import Image

from data_prep import schema

REPO = pathlib.Path(__file__).resolve().parents[1]


def _run_demo(output_dir, flagfile):
    return subprocess.run(
        [
            sys.executable,
            "-m",
            "demo",
            f"--output_dir={output_dir}",
            f"--train_flagfile={flagfile}",
        ],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=600,
    )


def test_demo_chain_runs_every_stage_and_hands_over(tmp_path):
    out = tmp_path / "demo"
    result = _run_demo(out, "tests/e2e_toy.flags")
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert "=== summary ===" in result.stdout

    manifest = schema.read_manifest(str(out / "data"))
    examples = sum(split.num_examples for split in manifest.splits.values())
    num_photos = len(os.listdir(out / "photos"))
    assert manifest.num_inputs == examples + manifest.num_rejected == num_photos
    assert manifest.splits[schema.VALIDATION].num_examples >= 1

    assert (out / "model" / "pretrain" / "checkpoint").exists()
    assert (out / "model" / "gan" / "checkpoint").exists()
    scores = json.loads((out / "results" / "evaluation.json").read_text())
    assert len(scores["images"]) == manifest.splits[schema.VALIDATION].num_examples
    assert scores["model"]["psnr"] > 0 and scores["bicubic"]["psnr"] > 0
    assert sorted(os.listdir(out / "export" / "srgan")) == ["1"]

    lr = np.asarray(Image.open(out / "requests" / "lr.png"))
    sr_rest = np.asarray(Image.open(out / "results" / "sr_rest.png"))
    sr_grpc = np.asarray(Image.open(out / "results" / "sr_grpc.png"))
    assert sr_rest.shape == (lr.shape[0] * 4, lr.shape[1] * 4, 3)
    np.testing.assert_array_equal(sr_rest, sr_grpc)  # same model, two protocols
    grid = Image.open(out / "results" / "lr_bicubic_sr.png")
    assert grid.size == (3 * sr_rest.shape[1], sr_rest.shape[0])


def test_demo_names_the_failing_stage(tmp_path):
    bad_flags = tmp_path / "bad.flags"
    bad_flags.write_text("--flagfile=configs/quickstart.flags\n--hr_patch_size=100000\n")
    result = _run_demo(tmp_path / "demo", bad_flags)
    assert result.returncode != 0
    assert "demo failed at stage 'train (pretrain)'" in result.stderr
