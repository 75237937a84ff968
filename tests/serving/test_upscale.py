"""srgan-upscale (serving.upscale): files through an export in process, newest version found."""

import io
import os
import shutil

import numpy as np
import tensorflow as tf
from PIL import Image

from serving import contract
from tests.fixtures import make_image, png_bytes
from tests.serving.conftest import MODEL_NAME, SCALE, run_module


def test_upscales_a_folder_with_the_newest_version_like_the_signature(loaded, export_dir, tmp_path):
    base = tmp_path / MODEL_NAME
    shutil.copytree(export_dir, base / "3")
    inputs = tmp_path / "in"
    inputs.mkdir()
    images = {"a": make_image(20, 24, seed=1), "b": make_image(16, 12, seed=2)}
    for name, image in images.items():
        (inputs / f"{name}.png").write_bytes(png_bytes(image))
    (inputs / "notes.txt").write_text("not an image")

    done = run_module(
        "serving.upscale", f"--model={base}", f"--input={inputs}", f"--output={tmp_path / 'out'}"
    )
    assert done.returncode == 0, done.stderr[-2000:]
    assert sorted(os.listdir(tmp_path / "out")) == ["a.png", "b.png"]
    signature = loaded.signatures[contract.TENSOR_SIGNATURE]
    for name, image in images.items():
        sr = np.asarray(Image.open(io.BytesIO((tmp_path / "out" / f"{name}.png").read_bytes())))
        assert sr.shape == (image.shape[0] * SCALE, image.shape[1] * SCALE, 3)
        expected = signature(lr_image=tf.constant(image[np.newaxis]))[contract.TENSOR_OUTPUT]
        np.testing.assert_array_equal(sr, expected[0].numpy())


def test_a_folder_without_exports_is_one_error_line(tmp_path):
    (tmp_path / "lr.png").write_bytes(png_bytes(make_image(8, 8)))
    done = run_module(
        "serving.upscale",
        f"--model={tmp_path / 'nothing'}",
        f"--input={tmp_path / 'lr.png'}",
        f"--output={tmp_path / 'sr.png'}",
    )
    assert done.returncode == 1
    assert done.stderr.strip().splitlines()[-1].startswith("error: ")
    assert "neither a SavedModel nor holds integer versions" in done.stderr
