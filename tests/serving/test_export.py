"""The SavedModel export: signatures, fresh-process equality, tiling, pixel limit, versions."""

import dataclasses
import io
import os
import subprocess
import sys

import numpy as np
import pytest
import tensorflow as tf
from PIL import Image
from tensorflow_serving.apis import prediction_log_pb2

from serving import contract, export_lib, versions
from tests.fixtures import make_image, png_bytes
from tests.serving.conftest import GENERATOR_CONFIG, MODEL_NAME, SCALE, TILING, generator_uint8

# The venv's console script, next to its python (not resolved through the python symlink).
SAVED_MODEL_CLI = os.path.join(os.path.dirname(sys.executable), "saved_model_cli")


def _signature_block(text, name):
    start = text.index(f"signature_def['{name}']")
    end = text.find("signature_def[", start + 1)
    return text[start : end if end > 0 else None]


def test_saved_model_cli_shows_both_signatures(export_dir):
    cli = SAVED_MODEL_CLI if os.path.exists(SAVED_MODEL_CLI) else "saved_model_cli"
    shown = subprocess.run(
        [cli, "show", "--all", "--dir", export_dir], capture_output=True, text=True, check=True
    ).stdout
    default = _signature_block(shown, contract.BYTES_SIGNATURE)
    assert f"inputs['{contract.BYTES_INPUT}']" in default
    assert f"outputs['{contract.BYTES_OUTPUT}']" in default
    assert default.count("dtype: DT_STRING") == 2 and default.count("shape: (-1)") == 2
    tensor = _signature_block(shown, contract.TENSOR_SIGNATURE)
    assert f"inputs['{contract.TENSOR_INPUT}']" in tensor
    assert f"outputs['{contract.TENSOR_OUTPUT}']" in tensor
    assert tensor.count("dtype: DT_UINT8") == 2 and tensor.count("shape: (-1, -1, -1, 3)") == 2


@pytest.mark.parametrize("height,width", [(70, 50), (33, 97)])
def test_tiled_output_equals_untiled(loaded, generator, height, width):
    assert max(height, width) > TILING.tile_size  # Several tiles, including ragged edge tiles.
    lr = make_image(height, width, seed=height)[np.newaxis]
    tiled = loaded.signatures[contract.TENSOR_SIGNATURE](lr_image=tf.constant(lr))
    tiled = tiled[contract.TENSOR_OUTPUT].numpy()
    assert tiled.shape == (1, height * SCALE, width * SCALE, 3)
    assert np.abs(tiled.astype(int) - generator_uint8(generator, lr)).max() <= 2


@pytest.mark.parametrize("mode,channels", [("L", 1), ("RGB", 3), ("RGBA", 4)])
@pytest.mark.parametrize("image_format", ["PNG", "BMP", "JPEG"])
def test_bytes_signature_decodes_formats_to_rgb(loaded, image_format, mode, channels):
    if image_format == "JPEG" and mode == "RGBA":
        pytest.skip("JPEG has no alpha channel.")
    rgb = make_image(20, 28, seed=channels)
    image = Image.fromarray(rgb).convert(mode)
    buffer = io.BytesIO()
    image.save(buffer, format=image_format)
    out = loaded.signatures[contract.BYTES_SIGNATURE](image_bytes=tf.constant([buffer.getvalue()]))[
        contract.BYTES_OUTPUT
    ].numpy()
    sr = np.asarray(Image.open(io.BytesIO(out[0])))
    assert sr.shape == (20 * SCALE, 28 * SCALE, 3)


def test_bytes_signature_equals_tensor_signature_on_batch(loaded):
    images = [make_image(16, 12, seed=1), make_image(20, 24, seed=2)]  # Different sizes: map_fn.
    out = loaded.signatures[contract.BYTES_SIGNATURE](
        image_bytes=tf.constant([png_bytes(i) for i in images])
    )[contract.BYTES_OUTPUT]
    for image, png in zip(images, out.numpy(), strict=True):
        expected = loaded.signatures[contract.TENSOR_SIGNATURE](
            lr_image=tf.constant(image[np.newaxis])
        )[contract.TENSOR_OUTPUT][0].numpy()
        np.testing.assert_array_equal(np.asarray(Image.open(io.BytesIO(png))), expected)


def test_over_pixel_limit_is_invalid_argument(loaded):
    with pytest.raises(tf.errors.InvalidArgumentError, match="max_input_pixels=10000"):
        loaded.signatures[contract.TENSOR_SIGNATURE](lr_image=tf.zeros([1, 120, 100, 3], tf.uint8))


def test_warmup_records_are_prediction_logs_for_both_signatures(export_dir):
    path = os.path.join(export_dir, contract.WARMUP_FILE)
    logs = [
        prediction_log_pb2.PredictionLog.FromString(r.numpy())
        for r in tf.data.TFRecordDataset(path)
    ]
    names = {log.predict_log.request.model_spec.signature_name for log in logs}
    assert names == set(contract.SIGNATURES)
    assert all(log.predict_log.request.model_spec.name == MODEL_NAME for log in logs)


def test_export_records_its_scale_and_generator(export_dir, model_dir):
    metadata = versions.read_metadata(export_dir)
    assert metadata["scale"] == SCALE == GENERATOR_CONFIG.scale
    assert metadata["generator"] == dataclasses.asdict(GENERATOR_CONFIG)
    assert metadata["tiling"] == dataclasses.asdict(TILING)
    assert metadata["checkpoint"].startswith(str(model_dir))
    with pytest.raises(FileNotFoundError, match="not a SavedModel exported by serving.export"):
        versions.read_metadata(os.path.dirname(export_dir))


@pytest.mark.parametrize("name", ["../x", "a/b", "..", ""])
def test_export_refuses_a_model_name_that_is_not_one_folder(generator, tmp_path, name):
    with pytest.raises(ValueError, match="single folder name"):
        export_lib.export_generator(generator, GENERATOR_CONFIG, str(tmp_path), name)
    assert os.listdir(tmp_path) == []


def test_version_folders_are_plain_integers(tmp_path):
    for name in ("1", "10", "2", "\u00b2", "3a", ".tmp-4-1-x"):
        (tmp_path / name).mkdir()
    assert versions.list_versions(str(tmp_path)) == [1, 2, 10]
    assert versions.next_version(str(tmp_path)) == 11
