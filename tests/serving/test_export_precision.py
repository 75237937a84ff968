"""Reduced-precision exports (--precision): each serves from a fresh server process, the
bfloat16 and float16 ones within 0.1 dB Y-PSNR of the float32 export on Set5 crops; the
--format / --precision combinations the CLI refuses; the precision in the metadata."""

import io
import os
import subprocess
import sys
import time

import keras
import numpy as np
import pytest
import tensorflow as tf
from absl import app, flags
from PIL import Image

from serving import client_lib, contract, export_lib, server_process, versions
from serving import export as export_cli
from tests.fixtures import SHARED_DATA
from tests.serving.conftest import REPO
from trainer import config as config_lib
from trainer import generator_store, metrics

SET5 = SHARED_DATA / "Set5_x4"
# A tiny SRResNet with BatchNorm (so the export folds it) and the bicubic skip, its weights
# perturbed from the start: bicubic plus a residual, i.e. pictures, not noise.
CONFIG = config_lib.GeneratorConfig(scale=4, num_blocks=1, channels=8, bicubic_skip=True)
CROP = 32  # LR side of each Set5 crop: two by two tiles of 16
SCALE = CONFIG.scale


def _trained_ish(seed=5):
    """CONFIG's generator with every weight (BN statistics too) nudged off its start."""
    keras.utils.set_random_seed(seed)  # the same start every run, so the same dB
    generator = generator_store.build_generator(CONFIG)
    rng = np.random.default_rng(seed)
    for weight in generator.weights:
        weight.assign(weight.numpy() + rng.normal(0.0, 0.02, weight.shape).astype(np.float32))
    return generator


def _save_trained_ish(model_dir, seed=5):
    """A checkpoint of _trained_ish(seed)."""
    generator = _trained_ish(seed)
    generator_store.write_config(model_dir, CONFIG)
    checkpoint = tf.train.Checkpoint(**{generator_store.GENERATOR_KEY: generator})
    checkpoint.save(os.path.join(generator_store.phase_dir(model_dir, config_lib.PRETRAIN), "ckpt"))


def _set5_crops(count=3):
    """(LR PNG bytes, HR uint8) of a CROP x CROP LR window from the middle of Set5 images."""
    crops = []
    for i in range(1, count + 1):
        lr = np.asarray(Image.open(SET5 / f"img_00{i}_SRF_4_LR.png").convert("RGB"))
        hr = np.asarray(Image.open(SET5 / f"img_00{i}_SRF_4_HR.png").convert("RGB"))
        y, x = (lr.shape[0] - CROP) // 2, (lr.shape[1] - CROP) // 2
        buffer = io.BytesIO()
        Image.fromarray(lr[y : y + CROP, x : x + CROP]).save(buffer, "PNG")
        hr_crop = hr[y * SCALE : (y + CROP) * SCALE, x * SCALE : (x + CROP) * SCALE]
        crops.append((buffer.getvalue(), hr_crop))
    return crops


def _wait_for_version(client, version, timeout=60.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        states = client.status()["model_version_status"]
        if any(int(s["version"]) == version and s["state"] == "AVAILABLE" for s in states):
            return
        time.sleep(0.2)
    raise AssertionError(f"the server did not load version {version}: {states}")


def _serve(server, version, pngs):
    """The server's answer for `pngs` from `version` (the newest, once it has loaded it)."""
    with client_lib.ServingClient(server.rest_address, contract.REST, "m") as newest:
        _wait_for_version(newest, version)
    with client_lib.ServingClient(server.rest_address, contract.REST, "m", version=version) as c:
        return [np.asarray(Image.open(io.BytesIO(png))) for png in c.upscale_encoded(pngs)]


def _mean_y_psnr(images, references):
    return np.mean(
        [metrics.psnr_ssim_y(a, b, SCALE)[0] for a, b in zip(images, references, strict=True)]
    )


def _start_module(*args):
    """`python -m <args>` from the repository root, started (not waited for), output piped."""
    return subprocess.Popen(
        [sys.executable, "-m", *args],
        cwd=REPO,
        env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


@pytest.mark.skipif(not SET5.is_dir(), reason=f"{SET5} not present")
def test_each_precision_serves_within_a_tenth_of_a_db_of_float32(tmp_path):
    model_dir, base = str(tmp_path / "model"), str(tmp_path / "exported")
    staging = str(tmp_path / "staging")
    _save_trained_ish(model_dir)
    # bfloat16 through the CLI flag (in its own process, meanwhile), the others in process;
    # each is moved in as a newer version that the running server loads and answers from.
    cli = _start_module(
        "serving.export",
        f"--model_dir={model_dir}",
        f"--export_base={staging}",
        "--model_name=bfloat16",
        "--tile_size=16",
        "--precision=bfloat16",
    )
    pngs, hrs = zip(*_set5_crops(), strict=True)
    export_lib.export_from_model_dir(model_dir, base, "m", tile_size=16)
    outputs = {}
    with server_process.start(
        os.path.join(base, "m"), "m", extra_args=["--file_system_poll_wait_seconds=0.2"]
    ) as server:
        export_lib.export_from_model_dir(
            model_dir, staging, "float16", tile_size=16, precision="float16"
        )
        outputs["float32"] = _serve(server, 1, pngs)
        os.rename(os.path.join(staging, "float16", "1"), os.path.join(base, "m", "2"))
        outputs["float16"] = _serve(server, 2, pngs)
        stdout, stderr = cli.communicate(timeout=120)
        assert cli.returncode == 0, stderr[-2000:]
        assert "bfloat16) to" in stdout
        os.rename(os.path.join(staging, "bfloat16", "1"), os.path.join(base, "m", "3"))
        outputs["bfloat16"] = _serve(server, 3, pngs)
    for version, precision in enumerate(("float32", "float16", "bfloat16"), start=1):
        metadata = versions.read_metadata(os.path.join(base, "m", str(version)))
        assert metadata["precision"] == precision and metadata["tiling"]["tile_size"] == 16
        assert outputs[precision][0].shape == (CROP * SCALE, CROP * SCALE, 3)
    reference = _mean_y_psnr(outputs["float32"], hrs)
    assert reference > 20.0  # pictures (bicubic is ~28 dB here), not noise
    for precision in ("bfloat16", "float16"):
        against_hr = _mean_y_psnr(outputs[precision], hrs)
        against_float32 = _mean_y_psnr(outputs[precision], outputs["float32"])
        print(
            f"{precision}: Y-PSNR {against_hr:.3f} dB vs HR (float32 export {reference:.3f} dB), "
            f"{against_float32:.1f} dB vs the float32 export"
        )
        assert abs(against_hr - reference) < 0.1
        assert against_float32 > 40.0


@pytest.mark.parametrize(
    "export_format, precision, present, message",
    [
        ("savedmodel", "dynamic_int8", (), "does not take --precision=dynamic_int8"),
        ("litert", "bfloat16", (), "--format=litert does not take --precision=bfloat16"),
        ("litert", "float16", ("tile_overlap",), "--tile_overlap applies to --format=savedmodel"),
    ],
)
def test_format_and_precision_combinations_that_are_refused(
    export_format, precision, present, message
):
    with pytest.raises(app.UsageError, match=message):
        export_cli.check_format_flags(export_format, precision, present)
    for export_format, precisions in export_cli.PRECISIONS.items():
        for allowed in precisions:
            export_cli.check_format_flags(export_format, allowed)


def test_cli_refuses_litert_in_bfloat16_before_exporting(tmp_path):
    # main() in process (the CLI's subprocess run is in the Set5 test): flags parsed, then reset.
    base = tmp_path / "exported"
    argv = ["srgan-export", f"--model_dir={tmp_path}", f"--export_base={base}"]
    try:
        flags.FLAGS([*argv, "--format=litert", "--precision=bfloat16"])
        with pytest.raises(app.UsageError, match="--format=litert does not take"):
            export_cli.main(["srgan-export"])
    finally:
        flags.FLAGS.unparse_flags()
    assert not base.exists()


def test_unknown_precision_and_old_metadata(generator, tmp_path):
    with pytest.raises(ValueError, match="precision must be one of"):
        export_lib.export_generator(generator, CONFIG, str(tmp_path), "m", precision="dynamic_int8")
    assert os.listdir(tmp_path) == []
    old = versions.make_metadata({"scale": 4}, {})
    del old["precision"]  # an export written before the key existed
    versions.write_metadata(str(tmp_path), old)
    assert versions.read_metadata(str(tmp_path))["precision"] == "float32"


@pytest.mark.parametrize("kernel_size, block_size", [(9, 2), (3, 2), (5, 3)])
def test_space_to_depth_conv_is_the_conv_it_replaces(kernel_size, block_size):
    # The same sums in another order, the borders (the "same" zero padding) included.
    rng = np.random.default_rng(kernel_size)
    inputs = rng.normal(size=(2, 4 * block_size, 5 * block_size, 6)).astype(np.float32)
    kernel = rng.normal(size=(kernel_size, kernel_size, 6, 3)).astype(np.float32)
    bias = rng.normal(size=3).astype(np.float32)
    expected = tf.nn.conv2d(inputs, kernel, 1, "SAME") + bias
    layer = export_lib.SpaceToDepthConv2D(3, kernel_size, block_size)
    layer.build(inputs.shape)
    layer.set_weights(
        [w.astype(np.float32) for w in export_lib.split_kernel(kernel, bias, block_size)]
    )
    outputs = layer(inputs).numpy()
    assert outputs.shape == expected.shape and outputs.dtype == np.float32
    np.testing.assert_allclose(outputs, expected, atol=1e-5 * np.abs(expected).max())


def test_float32_export_splits_the_last_conv_within_1e5():
    generator = _trained_ish()
    lr = np.random.default_rng(0).random((1, 13, 10, 3)).astype(np.float32)  # odd LR sides
    served = export_lib.with_precision(generator, CONFIG, "float32")
    kinds = [type(layer) for layer in served.layers]
    assert kinds.count(export_lib.SpaceToDepthConv2D) == 1
    expected = generator(lr, training=False).numpy()
    np.testing.assert_allclose(served(lr, training=False).numpy(), expected, atol=1e-5)
    plain = export_lib.with_precision(generator, CONFIG, "float32", split_output_conv=False)
    assert plain is generator
    x3 = config_lib.GeneratorConfig(scale=3, num_blocks=1, channels=8)
    x3_generator = generator_store.build_generator(x3)  # an odd HR side: not split
    assert export_lib.with_precision(x3_generator, x3, "float32") is x3_generator
