"""The LiteRT export (serving.litert) and its tiler (serving.upscale_litert) against the SavedModel
export of the same checkpoint: the float32 model tiles to the SavedModel's pixels, float16 and
dynamic-range int8 stay close, and litert.json describes what was written."""

import json
import os

import numpy as np
import pytest
from PIL import Image

from data_prep import images
from serving import export_lib, litert, upscale_litert
from serving.upscale import SavedModelUpscaler
from tests.fixtures import SHARED_DATA, make_image
from tests.serving.conftest import GENERATOR_CONFIG, run_module
from tests.serving.test_export_generators import TINY, _save
from trainer import config as config_lib

TILE = 32
SET5_LR = SHARED_DATA / "Set5_x4" / "img_001_SRF_4_LR.png"


def _lr_image():
    """A Set5 LR crop over 3 x 3 tiles of 32 (a smooth synthetic image without the data)."""
    if SET5_LR.exists():
        return images.load_rgb(str(SET5_LR))[:70, :90]
    return make_image(70, 90, seed=5)


def _psnr(a, b):
    mse = np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2)
    return 10 * np.log10(255.0**2 / max(mse, 1e-12))


@pytest.fixture(scope="module")
def exports(model_dir, tmp_path_factory):
    """{precision: LiteRT version dir} and the SavedModel's dir, all of the tiny generator."""
    base = str(tmp_path_factory.mktemp("litert"))
    saved_model, _ = export_lib.export_from_model_dir(model_dir, base, "sm", tile_size=TILE)
    dirs = {
        precision: litert.export_litert(
            model_dir, base, "tiny", precision=precision, tile_size=TILE
        )
        for precision in litert.PRECISIONS
    }
    return base, saved_model, dirs


@pytest.fixture(scope="module")
def reference(exports):
    return SavedModelUpscaler(exports[1]).upscale_array(_lr_image()[np.newaxis])[0]


def test_float32_tiles_like_the_saved_model(exports, reference):
    _, saved_model, dirs = exports
    upscaler = upscale_litert.LiteRTUpscaler(dirs[litert.FLOAT32])
    lr = _lr_image()
    sr = upscaler.upscale_array(lr[np.newaxis])[0]
    assert sr.shape == (70 * 4, 90 * 4, 3) and sr.dtype == np.uint8
    close = np.abs(sr.astype(int) - reference.astype(int)) <= 1
    assert close.mean() >= 0.999
    # An image shorter than one window (64) along both axes: run at its size, still exact.
    small = lr[:20, :45]
    expected = SavedModelUpscaler(saved_model).upscale_array(small[np.newaxis])[0]
    got = upscaler.upscale_image(small)
    assert np.mean(np.abs(got.astype(int) - expected.astype(int)) <= 1) >= 0.999


def test_compact_float32_runs_at_any_size_like_the_saved_model(tmp_path):
    # Its nearest-neighbour base is traced size-free (litert._resizable_nearest): an image
    # smaller than one window runs at its own size, exact, instead of zero-padded.
    model_dir, base = str(tmp_path / "compact"), str(tmp_path / "exported")
    _save(model_dir, TINY["compact"], config_lib.PRETRAIN, seed=1)
    saved_model, _ = export_lib.export_from_model_dir(model_dir, base, "sm", tile_size=TILE)
    upscaler = upscale_litert.LiteRTUpscaler(
        litert.export_litert(model_dir, base, "c", tile_size=TILE), num_threads=1
    )
    assert upscaler.metadata["resizable_input"] and upscaler.window > 40
    lr = _lr_image()
    for image in (lr[:20, :40], lr):  # smaller than one window; 3 x 3 windows
        expected = SavedModelUpscaler(saved_model).upscale_array(image[np.newaxis])[0]
        got = upscaler.upscale_image(image)
        assert got.shape == expected.shape
        assert np.mean(np.abs(got.astype(int) - expected.astype(int)) <= 1) >= 0.999
    assert upscaler._input_hw == (upscaler.window, upscaler.window)  # last: a full window


@pytest.mark.parametrize(
    "precision, floor_db", [(litert.FLOAT16, 45.0), (litert.DYNAMIC_INT8, 25.0)]
)
def test_reduced_precisions_stay_close_to_float32(exports, reference, precision, floor_db):
    upscaler = upscale_litert.LiteRTUpscaler(exports[2][precision], num_threads=1)
    sr = upscaler.upscale_array(_lr_image()[np.newaxis])[0]
    assert _psnr(sr, reference) > floor_db
    sizes = {p: os.path.getsize(os.path.join(d, litert.MODEL_FILE)) for p, d in exports[2].items()}
    assert sizes[precision] < sizes[litert.FLOAT32]


def test_layout_and_metadata_describe_the_model(exports, model_dir):
    base, _, dirs = exports
    assert sorted(os.listdir(os.path.join(base, "tiny-litert"))) == ["1", "2", "3"]
    assert not os.path.exists(os.path.join(base, "tiny"))  # never inside TF Serving's base path
    version_dir = dirs[litert.DYNAMIC_INT8]
    with open(os.path.join(version_dir, litert.METADATA_FILE)) as f:
        metadata = json.load(f)
    overlap = export_lib.default_overlap(GENERATOR_CONFIG)
    window = TILE + 2 * overlap
    assert metadata["precision"] == litert.DYNAMIC_INT8 and metadata["scale"] == 4
    assert (metadata["tile_size"], metadata["overlap"]) == (TILE, overlap)
    assert metadata["input"]["shape"] == [1, window, window, 3]
    assert metadata["input"]["dtype"] == "float32" and metadata["input"]["range"] == [0.0, 1.0]
    assert metadata["output"]["shape"] == [1, window * 4, window * 4, 3]
    assert metadata["output"]["dtype"] == "uint8" and metadata["output"]["range"] == [0, 255]
    assert metadata["resizable_input"] is True  # srresnet: no size in the model
    assert metadata["generator"]["channels"] == GENERATOR_CONFIG.channels
    assert metadata["checkpoint"].startswith(os.path.join(model_dir, "pretrain"))
    model_file = os.path.join(version_dir, litert.MODEL_FILE)
    assert metadata["model_bytes"] == os.path.getsize(model_file)
    # The TF-free reader's names are the exporter's.
    assert (upscale_litert.MODEL_FILE, upscale_litert.METADATA_FILE) == (
        litert.MODEL_FILE,
        litert.METADATA_FILE,
    )
    # A bare model file resolves to its json; the base path to its newest version.
    assert upscale_litert.resolve_model(model_file)[1] == metadata
    assert upscale_litert.resolve_model(os.path.join(base, "tiny-litert"))[1] == metadata


def test_bad_requests_are_refused(exports, model_dir):
    base, _, dirs = exports
    with pytest.raises(ValueError, match="Unknown LiteRT precision 'int4'.*float16"):
        litert.export_litert(model_dir, base, "tiny", precision="int4")
    with pytest.raises(FileExistsError, match="never overwritten"):
        litert.export_litert(model_dir, base, "tiny", version=1, tile_size=TILE)
    assert sorted(os.listdir(os.path.join(base, "tiny-litert"))) == ["1", "2", "3"]  # no temp
    with pytest.raises(ValueError, match="num_threads"):
        upscale_litert.LiteRTUpscaler(dirs[litert.FLOAT32], num_threads=0)


def test_cli_writes_a_png_of_the_upscaled_size(exports, tmp_path):
    base, _, _ = exports
    lr_file, sr_file = tmp_path / "lr.png", tmp_path / "out" / "sr.png"
    Image.fromarray(make_image(40, 70, seed=2)).save(lr_file)
    result = run_module(
        "serving.upscale_litert",
        f"--model={os.path.join(base, 'tiny-litert')}",
        f"--input={lr_file}",
        f"--output={sr_file}",
        "--num_threads=2",
    )
    assert result.returncode == 0, result.stderr[-2000:]
    assert Image.open(sr_file).size == (70 * 4, 40 * 4)
    result = run_module(
        "serving.upscale_litert", f"--model={tmp_path}", f"--input={lr_file}", "--output=x.png"
    )
    assert result.returncode != 0 and "error:" in result.stderr
