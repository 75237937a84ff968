"""Installable SRGAN project: Beam data prep, tf.data + tf.distribute trainer, TF Serving export.

`pip install .` is the client-only install (no TensorFlow): enough for `srgan-client` to call a
TF Serving deployment. `pip install '.[train]'` adds the whole training and serving stack.
"""

import setuptools

# The base install: what `serving.client` needs, nothing heavier. It is also what Beam workers get
# through `--setup_file=./setup.py` (Dataflow installs the package without extras): the worker code
# (data_prep.transforms, images, pairing, schema, example_codec) imports numpy, PIL and apache_beam
# only, never TensorFlow; Beam itself is in the worker image, absl only on the launching machine.
INSTALL_REQUIRES = [
    "numpy>=2,<3",
    "pillow>=10",
    "absl-py>=2",
    "grpcio>=1.60",
    # protobuf 6.x is the only major that TF 2.21, Beam 2.77 and tensorflow-serving-api 2.21 all
    # accept, so a client environment uses it too.
    "protobuf>=6,<7",
]

# Data prep, training, evaluation, export and the local server.
TRAIN_REQUIRES = [
    "tensorflow==2.21.*",
    "apache-beam[tfrecord]==2.77.*",
    # The PredictionService protos for the local server (its gRPC API is TF Serving's).
    "tensorflow-serving-api==2.21.*",
    # tf.summary.scalar/image need it (TF 2.21 no longer depends on it); also the viewer.
    "tensorboard==2.21.*",
    # Beam's TFRecord writer falls back to crcmod (~100 MB/s CRC32C) without it (~2 GB/s).
    "google-crc32c>=1.5",
    # The local server's Prometheus endpoint (TF Serving's metric names: serving.metrics).
    "prometheus_client>=0.20",
]

# Every entry module has `def run(): app.run(main)`; `python -m <module>` works the same way.
CONSOLE_SCRIPTS = [
    "srgan-prepare=data_prep.build_tfrecords:run",
    "srgan-samples=data_prep.sample_images:run",
    "srgan-train=trainer.train:run",
    "srgan-evaluate=trainer.evaluate:run",
    "srgan-export=serving.export:run",
    "srgan-serve=serving.local_server:run",
    "srgan-upscale=serving.upscale:run",
    "srgan-upscale-litert=serving.upscale_litert:run",
    "srgan-client=serving.client:run",
]

setuptools.setup(
    name="srgan-tf",
    version="0.1.0",
    description="Image super-resolution with SRResNet/SRGAN on TensorFlow: Beam data prep, "
    "distributed training, TF Serving export.",
    python_requires=">=3.11,<3.12",
    # benchmarks/ and tests/ stay in the repository: they run from its root, not from site-packages.
    packages=setuptools.find_packages(
        include=[
            "data_prep",
            "data_prep.*",
            "trainer",
            "trainer.*",
            "srgan_cli",
            "srgan_cli.*",
            "serving",
            "serving.*",
        ]
    ),
    install_requires=INSTALL_REQUIRES,
    extras_require={
        "train": TRAIN_REQUIRES,
        # The LiteRT interpreter without TensorFlow: `srgan-upscale-litert` on an edge box
        # (numpy + pillow + this; without it the upscaler uses TensorFlow's tf.lite).
        "litert": ["ai-edge-litert>=2.3.0"],
        # The built-in sample photos ship inside scikit-image's wheel (skimage.data).
        "demo": ["scikit-image>=0.24"],
        "test": [
            "pytest>=8",
            "pytest-timeout>=2",
            "pytest-xdist>=3",
            "scikit-image>=0.24",
            "ruff>=0.6",
        ],
    },
    entry_points={"console_scripts": CONSOLE_SCRIPTS},
)
