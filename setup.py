"""Installable SRGAN project: Beam data prep, tf.data + tf.distribute trainer, TF Serving export."""

import setuptools

# protobuf 6.x is the only major that TF 2.21, Beam 2.77 and tensorflow-serving-api 2.21 all accept.
INSTALL_REQUIRES = [
    "tensorflow==2.21.*",
    "apache-beam[tfrecord]==2.77.*",
    "tensorflow-serving-api==2.21.*",
    "protobuf>=6,<7",
    "numpy>=2,<3",
    "pillow>=10",
    "absl-py>=2",
    "grpcio>=1.60",
    # tf.summary.scalar/image need it (TF 2.21 no longer depends on it); also the viewer.
    "tensorboard==2.21.*",
    # Beam's TFRecord writer falls back to crcmod (~100 MB/s CRC32C) without it (~2 GB/s).
    "google-crc32c>=1.5",
]

setuptools.setup(
    name="srgan-tf",
    version="0.1.0",
    description="Image super-resolution with SRResNet/SRGAN on TensorFlow: Beam data prep, "
    "distributed training, TF Serving export.",
    python_requires=">=3.11,<3.12",
    packages=setuptools.find_packages(
        include=[
            "data_prep",
            "data_prep.*",
            "trainer",
            "trainer.*",
            "srgan_cli",
            "serving",
            "serving.*",
        ]
    ),
    install_requires=INSTALL_REQUIRES,
    extras_require={
        # The built-in sample photos ship inside scikit-image's wheel (skimage.data).
        "demo": ["scikit-image>=0.24"],
        "test": ["pytest>=8", "pytest-timeout>=2", "scikit-image>=0.24", "ruff>=0.6"],
    },
)
