"""Test-wide TensorFlow set-up: two logical CPU devices so MirroredStrategy has 2 replicas."""

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import tensorflow as tf  # noqa: E402


def _split_cpu(num_devices=2):
    cpus = tf.config.list_physical_devices("CPU")
    try:
        tf.config.set_logical_device_configuration(
            cpus[0], [tf.config.LogicalDeviceConfiguration()] * num_devices
        )
    except RuntimeError:
        pass  # TF was initialised by an earlier import; the logical split is then fixed.


_split_cpu()
