"""`srgan-train --phase=gan --perceptual_weights=auto` offline: one warning, a log line, a record.

One real trainer process (2 GAN steps of a tiny generator, VGG19 conv1_2 features) in a home
where nothing is cached and every download goes through a proxy that refuses connections, so
the run is the same on a machine with internet access.
"""

import json
import os
import resource
import subprocess
import sys
import time

import tensorflow as tf

from tests import fixtures
from trainer import config as config_lib
from trainer import generator_store, perceptual

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def _generator_checkpoint(directory, generator_config):
    generator = generator_store.build_generator(generator_config)
    checkpoint = tf.train.Checkpoint(**{generator_store.GENERATOR_KEY: generator})
    return checkpoint.write(os.path.join(directory, "init"))


def test_gan_phase_offline_trains_on_random_features_says_so_once_and_records_it(tmp_path):
    data_dir = str(tmp_path / "data")
    images = [(f"t{i}", fixtures.make_image(48, 48, seed=i)) for i in range(2)]
    fixtures.write_dataset(data_dir, {"train": images})
    init = _generator_checkpoint(
        str(tmp_path), config_lib.GeneratorConfig(scale=4, num_blocks=1, channels=8)
    )
    model_dir = tmp_path / "model"
    home = tmp_path / "home"
    env = {
        **os.environ,
        "PYTHONPATH": REPO,
        "TF_CPP_MIN_LOG_LEVEL": "2",
        # No Keras cache anywhere (~/.keras, $KERAS_HOME, $TMPDIR/.keras) and no internet.
        "HOME": str(home),
        "KERAS_HOME": str(home / "keras"),
        "TMPDIR": str(tmp_path),
        "https_proxy": "http://127.0.0.1:9",
        "HTTPS_PROXY": "http://127.0.0.1:9",
        "no_proxy": "",
        "NO_PROXY": "",
    }
    command = [
        sys.executable,
        "-m",
        "trainer.train",
        f"--data_dir={data_dir}",
        f"--model_dir={model_dir}",
        f"--init_checkpoint={init}",
        "--phase=gan",
        "--perceptual_weights=auto",
        "--perceptual_network=vgg19",
        "--perceptual_layers=conv1_2:1",
        "--discriminator=vgg",
        "--discriminator_channels=8",
        "--batch_size=2",
        "--hr_patch_size=32",
        "--num_blocks=1",
        "--channels=8",
        "--train_steps=2",
        "--steps_per_loop=2",
        "--log_steps=2",
        "--checkpoint_steps=2",
        "--crops_per_image=1",
        "--shuffle_buffer=2",
        "--xla=off",
        "--strategy=one_device",
    ]
    start = time.perf_counter()
    run = subprocess.run(command, cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
    elapsed = time.perf_counter() - start
    cpu = resource.getrusage(resource.RUSAGE_CHILDREN)
    log = run.stdout + run.stderr
    assert run.returncode == 0, log[-3000:]

    spec = perceptual.NETWORKS["vgg19"]
    warnings = [line for line in log.splitlines() if "RANDOM features" in line]
    assert len(warnings) == 1, log[-3000:]
    assert spec.weights_origin in warnings[0]
    assert f"--perceptual_weights=/path/to/{spec.weights_file}" in warnings[0]
    assert "Perceptual features (vgg19): random (no ImageNet weights: " in log
    assert "ProxyError" in log or "Connection refused" in log, log[-3000:]

    with open(model_dir / "gan" / perceptual.RECORD_FILENAME) as f:
        record = json.load(f)
    assert record["requested"] == "auto" and record["path"] is None
    assert record["network"] == "vgg19" and not record["imagenet"]
    # (demo.py prints record["summary"]; importing demo here would define its flags twice in
    # a pytest worker, so tests/test_end_to_end.py checks the demo's line.)
    assert record["summary"].startswith("random (no ImageNet weights: ")
    assert tf.train.latest_checkpoint(str(model_dir / "gan")).endswith("ckpt-2")
    print(f"offline GAN run: {elapsed:.1f} s, {cpu.ru_utime + cpu.ru_stime:.1f} s of CPU")
