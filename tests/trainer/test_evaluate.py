"""The evaluator end to end: pair folders, a trainer checkpoint through the CLI, a SavedModel with
its export metadata, the scale read from the model, the one decode rule, and the trainer's
validation hook."""

import json
import os
import subprocess
import sys

import numpy as np
import pytest
import tensorflow as tf
from absl import flags
from absl.testing import flagsaver
from PIL import Image

from data_prep import images as images_lib
from serving import contract
from tests import fixtures
from trainer import evaluate, evaluation, generator_store, input_pipeline, metrics, models

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
SCALE = 4


@pytest.fixture(name="pairs_dir")
def _pairs_dir(tmp_path):
    """Three x4 pairs (one grayscale) and one HR without an LR partner."""
    folder = tmp_path / "pairs"
    folder.mkdir()
    for i, (h, w) in enumerate([(48, 64), (64, 48), (56, 56)]):
        hr = fixtures.make_image(h, w, seed=i)
        mode = "L" if i == 2 else "RGB"
        Image.fromarray(hr).convert(mode).save(folder / f"img_{i:03d}_SRF_4_HR.png")
        Image.fromarray(fixtures.downscale(hr, SCALE)).convert(mode).save(
            folder / f"img_{i:03d}_SRF_4_LR.png"
        )
    Image.fromarray(fixtures.make_image(32, 32)).save(folder / "lonely_HR.png")
    return str(folder)


@pytest.fixture(name="parsed_flags")
def _parsed_flags():
    """trainer.evaluate's flags usable in-process (main() without a subprocess), then restored."""
    flags.FLAGS.mark_as_parsed()
    with flagsaver.flagsaver():
        yield


def _bicubic_generator_checkpoint(model_dir):
    """A tiny generator whose learned branch is zeroed: its output is exactly bicubic."""
    config = generator_store.GeneratorConfig(
        scale=SCALE, num_blocks=1, channels=8, bicubic_skip=True
    )
    generator = generator_store.build_generator(config)
    last_conv = [
        layer
        for layer in generator.layers
        if isinstance(layer, tf.keras.layers.Conv2D) and layer.filters == 3
    ][-1]
    for variable in last_conv.weights:
        variable.assign(tf.zeros_like(variable))
    generator_store.write_config(model_dir, config)
    checkpoint = tf.train.Checkpoint(generator=generator)
    manager = tf.train.CheckpointManager(
        checkpoint, generator_store.phase_dir(model_dir, generator_store.PRETRAIN), max_to_keep=1
    )
    return manager.save()


def _run_cli(*args):
    return subprocess.run(
        [sys.executable, "-m", "trainer.evaluate", *args],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=240,
        env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"},
    )


def test_cli_evaluates_a_checkpoint_and_writes_json(tmp_path, pairs_dir):
    model_dir = str(tmp_path / "model")
    _bicubic_generator_checkpoint(model_dir)
    output = str(tmp_path / "result.json")

    run = _run_cli(
        f"--pairs_dir={pairs_dir}", f"--checkpoint={model_dir}", f"--output_json={output}"
    )

    assert run.returncode == 0, run.stderr
    assert "mean" in run.stdout and "img_002" in run.stdout
    assert f"model: {model_dir}/pretrain/ckpt-1" in run.stdout
    with open(output) as f:
        result = json.load(f)
    assert [image["key"] for image in result["images"]] == ["img_000", "img_001", "img_002"]
    assert [s["key"] for s in result["skipped"]] == ["lonely"]
    # The zeroed generator is bicubic in the HR range: identical numbers prove the value-range
    # round trip (uint8 -> LR [0, 1] -> HR [-1, 1] -> uint8) of the checkpoint path.
    assert result["model"]["psnr"] == pytest.approx(result["bicubic"]["psnr"], abs=0.05)
    assert result["model"]["ssim"] == pytest.approx(result["bicubic"]["ssim"], abs=1e-3)
    assert np.isfinite(result["bicubic"]["psnr"])


def test_bad_input_is_one_error_line(tmp_path, pairs_dir, parsed_flags):
    with flagsaver.flagsaver(pairs_dir=pairs_dir, checkpoint=str(tmp_path / "missing")):
        with pytest.raises(SystemExit, match="^error: No generator checkpoint under"):
            evaluate.main(["evaluate"])


def test_checkpoint_prefix_and_random_generator(tmp_path, pairs_dir):
    config = generator_store.GeneratorConfig(scale=SCALE, num_blocks=1, channels=8)
    generator = generator_store.build_generator(config)
    model_dir = str(tmp_path / "model")
    generator_store.write_config(model_dir, config)
    prefix = tf.train.CheckpointManager(
        tf.train.Checkpoint(generator=generator), os.path.join(model_dir, "gan"), max_to_keep=1
    ).save()
    upscale, restored_config, restored = evaluation.checkpoint_upscaler(prefix)
    assert restored == prefix and restored_config == config
    found = evaluation.list_pairs(pairs_dir, SCALE)

    report = evaluation.evaluate_pairs(upscale, found.pairs, restored_config.scale, found.rejected)

    assert len(report.images) == 3
    # Same weights, same numbers: the restored checkpoint is the saved generator.
    direct = evaluation.generator_upscaler(generator)
    key, hr_path, lr_path = found.pairs[0]
    lr = evaluation.read_rgb(lr_path)
    expected = metrics.psnr_ssim_y(direct(lr), evaluation.read_rgb(hr_path), SCALE)
    assert (report.images[0].psnr, report.images[0].ssim) == pytest.approx(expected)


class _BicubicExport(tf.Module):
    """Stands in for serving's export: the upscale_uint8 signature with the agreed names."""

    @tf.function(
        input_signature=[tf.TensorSpec([None, None, None, 3], tf.uint8, name=contract.TENSOR_INPUT)]
    )
    def upscale(self, lr_image):
        return {contract.TENSOR_OUTPUT: models.bicubic_upscale_uint8(lr_image, SCALE)}


def _bicubic_export(export_dir):
    """A SavedModel with the tensor signature and the export metadata serving writes."""
    module = _BicubicExport()
    tf.saved_model.save(
        module,
        export_dir,
        signatures={contract.TENSOR_SIGNATURE: module.upscale.get_concrete_function()},
    )
    # The format serving.versions.read_metadata reads (written by serving's exporter).
    metadata = {
        "format_version": 1,
        "scale": SCALE,
        "generator": {"scale": SCALE, "num_blocks": 1, "channels": 8, "bicubic_skip": True},
        "tiling": {},
        "checkpoint": None,
    }
    path = os.path.join(export_dir, contract.METADATA_FILE)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "w") as f:
        json.dump(metadata, f)


def test_saved_model_signature_and_scale_are_read_from_the_export(tmp_path, pairs_dir):
    export_dir = str(tmp_path / "export" / "1")
    _bicubic_export(export_dir)
    found = evaluation.list_pairs(pairs_dir, SCALE)

    upscale, scale = evaluate.saved_model_upscaler(export_dir)
    report = evaluation.evaluate_pairs(upscale, found.pairs, scale, found.rejected)

    assert scale == SCALE
    for image in report.images:
        assert (image.psnr, image.ssim) == (image.bicubic_psnr, image.bicubic_ssim)
    with pytest.raises(FileNotFoundError, match="no saved_model.pb"):
        evaluate.saved_model_upscaler(str(tmp_path))


def test_scale_comes_from_the_model_and_a_disagreeing_scale_is_an_error(
    tmp_path, pairs_dir, parsed_flags, capsys
):
    model_dir = str(tmp_path / "model")
    _bicubic_generator_checkpoint(model_dir)
    with flagsaver.flagsaver(pairs_dir=pairs_dir, checkpoint=model_dir, scale=2):
        with pytest.raises(SystemExit, match="Scales disagree: the model x4, --scale x2"):
            evaluate.main(["evaluate"])
    with flagsaver.flagsaver(pairs_dir=pairs_dir, bicubic_only=True):
        with pytest.raises(SystemExit, match="--bicubic_only on --pairs_dir needs --scale"):
            evaluate.main(["evaluate"])
    with flagsaver.flagsaver(pairs_dir=pairs_dir, checkpoint=model_dir):  # x4 from generator.json
        evaluate.main(["evaluate"])
    assert "img_002" in capsys.readouterr().out


def test_image_files_are_decoded_by_the_data_prep_rule(tmp_path):
    wide = (np.arange(12 * 16, dtype=np.uint16).reshape(12, 16) * 300).astype(np.uint16)
    path = str(tmp_path / "wide.png")
    Image.fromarray(wide).save(path)  # mode I;16
    pixels = evaluation.read_rgb(path)
    np.testing.assert_array_equal(pixels, images_lib.load_rgb(path))
    assert pixels.max() > 200  # 16-bit values are scaled to 8 bits, not clipped at 255


def test_wrong_scale_pairs_are_reported_not_dropped(tmp_path):
    folder = tmp_path / "pairs"
    folder.mkdir()
    hr = fixtures.make_image(64, 64)
    Image.fromarray(hr).save(folder / "a_HR.png")
    Image.fromarray(fixtures.downscale(hr, 2)).save(folder / "a_LR.png")
    Image.fromarray(hr).save(folder / "b_HR.png")
    Image.fromarray(fixtures.downscale(hr, 4)).save(folder / "b_LR.png")
    found = evaluation.list_pairs(str(folder), SCALE)

    report = evaluation.evaluate_pairs(None, found.pairs, SCALE, found.rejected)

    assert [image.key for image in report.images] == ["b"]
    assert report.means()["model"] is None
    [(path, key, reason)] = report.skipped
    assert key == "a" and "not a x4 pair" in reason


@pytest.mark.parametrize("hr_crop_size,batch_size,mirrored", [(None, 1, False), (32, 2, True)])
def test_evaluate_validation_on_the_validation_stream(tmp_path, hr_crop_size, batch_size, mirrored):
    images = [(f"k{i}", fixtures.make_image(48, 48, seed=i)) for i in range(3)]
    data_dir = str(tmp_path / "data")
    fixtures.write_dataset(data_dir, {"train": images[:1], "validation": images}, scale=SCALE)
    dataset = input_pipeline.make_validation_dataset(
        input_pipeline.open_dataset(data_dir), hr_crop_size=hr_crop_size, batch_size=batch_size
    )
    # The trainer calls it between steps with a generator built under its strategy's scope.
    strategy = (
        tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"])
        if mirrored
        else tf.distribute.get_strategy()
    )
    with strategy.scope():
        generator = generator_store.build_generator(
            generator_store.GeneratorConfig(scale=SCALE, num_blocks=1, channels=8)
        )

    result = evaluation.evaluate_validation(generator, dataset, SCALE)

    assert set(result) == {"psnr", "ssim", "bicubic_psnr", "bicubic_ssim"}
    assert all(np.isfinite(v) for v in result.values())
    if hr_crop_size is None:  # full images: bicubic must match the pair-folder evaluator
        expected = np.mean(
            [
                evaluation.score_image(key, hr, fixtures.downscale(hr, SCALE), SCALE).bicubic_psnr
                for key, hr in images
            ]
        )
        assert result["bicubic_psnr"] == pytest.approx(expected)


def test_main_evaluates_a_dataset_split_at_its_own_scale(tmp_path, parsed_flags):
    images = [(f"k{i}", fixtures.make_image(40, 48, seed=i)) for i in range(2)]
    data_dir = str(tmp_path / "data")
    fixtures.write_dataset(data_dir, {"train": images[:1], "validation": images}, scale=SCALE)
    output = str(tmp_path / "result.json")

    with flagsaver.flagsaver(
        data_dir=data_dir, split="validation", bicubic_only=True, output_json=output
    ):
        evaluate.main(["evaluate"])  # no --scale: the manifest's

    with open(output) as f:
        result = json.load(f)
    assert [image["key"] for image in result["images"]] == ["k0", "k1"]
    assert result["model"] is None
    expected = np.mean(
        [
            evaluation.score_image(key, hr, fixtures.downscale(hr, SCALE), SCALE).bicubic_psnr
            for key, hr in images
        ]
    )
    assert result["bicubic"]["psnr"] == pytest.approx(expected)
