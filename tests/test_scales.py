"""x2 and x3 from the job to the served model, in this process: prepare -> train -> export -> serve.

The x4 chain runs through the demo's command line in tests/test_end_to_end.py; these chains call
the same library code each entry calls (the Beam job in process, the training loop, the exporter,
the local server) so that every accepted scale is checked end to end without paying for a dozen
TensorFlow start-ups.
"""

import numpy as np
import pytest
import tensorflow as tf
from apache_beam.options.pipeline_options import PipelineOptions

from data_prep import images, pipeline
from serving import client_lib, contract, export_lib, server_lib, versions
from serving.serving_module import TilingConfig
from tests import fixtures
from trainer import config as config_lib
from trainer import input_pipeline, loop

MODEL_NAME = "toy"


def _prepare(root, scale):
    """Six HR-only photos (LR synthesised by the job), 4 train + 2 validation or so."""
    photos = root / "photos"
    photos.mkdir()
    for i in range(6):
        (photos / f"p{i}.png").write_bytes(fixtures.png_bytes(fixtures.make_image(96, 72, seed=i)))
    config = pipeline.JobConfig(
        hr_glob=str(photos / "*.png"),
        output_dir=str(root / "data"),
        pair=images.PairConfig(scale=scale),
        val_fraction=0.3,
    )
    pipeline.run(config, PipelineOptions(["--direct_num_workers=1"]))
    return input_pipeline.open_dataset(str(root / "data"))


def _train(source, model_dir, scale):
    patch = 16 * scale  # a multiple of the scale and of 16 (the discriminator's rule)
    run = config_lib.RunConfig(
        model_dir=model_dir,
        generator=config_lib.GeneratorConfig(scale=source.manifest.scale, num_blocks=1, channels=8),
        step=config_lib.StepConfig(
            phase=config_lib.PRETRAIN,
            xla="off",
            steps_per_loop=2,
            loss=config_lib.LossConfig(perceptual_weights="none"),
        ),
        input=config_lib.InputConfig(
            hr_patch_size=patch, global_batch_size=2, crops_per_image=2, shuffle_buffer=4
        ),
        schedule=config_lib.ScheduleConfig(train_steps=2, learning_rates=(1e-4,)),
        reporting=config_lib.ReportingConfig(checkpoint_steps=2, log_steps=2, eval_steps=2),
        seed=0,
    )
    step, metrics = loop.train(run, source, tf.distribute.get_strategy())
    assert step == 2 and np.isfinite(metrics["pixel_loss"])


@pytest.mark.parametrize("scale", [2, 3])
def test_every_scale_goes_from_the_job_to_the_served_model(tmp_path, scale):
    source = _prepare(tmp_path, scale)
    assert source.manifest.scale == scale
    model_dir = str(tmp_path / "model")
    _train(source, model_dir, scale)

    tiling = TilingConfig(tile_size=16, overlap=4, max_input_pixels=64 * 64)
    export_dir, _ = export_lib.export_from_model_dir(
        model_dir, str(tmp_path / "export"), MODEL_NAME, tiling_config=tiling
    )
    assert versions.read_metadata(export_dir)["scale"] == scale

    lr = fixtures.make_image(20, 36, seed=7)  # wider than a tile: the tiled path
    server = server_lib.start(
        server_lib.ServerConfig(
            str(tmp_path / "export" / MODEL_NAME), MODEL_NAME, rest_port=0, grpc_port=0
        )
    )
    with server:
        outputs = {}
        for protocol, address in (
            (contract.REST, server.rest_address),
            (contract.GRPC, server.grpc_address),
        ):
            with client_lib.ServingClient(address, protocol, MODEL_NAME) as client:
                outputs[protocol] = client.upscale_array(lr[np.newaxis])[0]
    assert outputs[contract.REST].shape == (20 * scale, 36 * scale, 3)
    np.testing.assert_array_equal(outputs[contract.REST], outputs[contract.GRPC])
