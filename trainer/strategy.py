"""Which tf.distribute strategy a run uses, and which worker owns the real output files.

  auto          MirroredStrategy over all visible GPUs; without a GPU, MirroredStrategy over the
                logical CPU devices when the CPU was split (--num_cpu_replicas > 1), else one CPU.
  mirrored      MirroredStrategy over all GPUs, or over the logical CPU devices.
  multi_worker  MultiWorkerMirroredStrategy; the cluster comes from the TF_CONFIG variable.
  one_device    OneDeviceStrategy on the first GPU, else the CPU.

MultiWorker runs follow the documented TF pattern for files: every worker takes part in a save
(the save itself may run collectives), but only the chief writes to the real directory; the
other workers write to a private temporary directory that is deleted afterwards.
"""

import json
import os
import posixpath

import tensorflow as tf
from absl import logging

STRATEGIES = ("auto", "mirrored", "multi_worker", "one_device")


def split_cpu(num_replicas):
    """Splits the first physical CPU into `num_replicas` logical devices.

    Must run before TensorFlow initialises its devices (before the first op or device query
    that creates a context). If TF is already initialised with the same split, this is a no-op.

    Raises:
      ValueError: TF was already initialised with a different number of logical CPUs.
    """
    if num_replicas <= 1:
        return
    cpu = tf.config.list_physical_devices("CPU")[0]
    try:
        tf.config.set_logical_device_configuration(
            cpu, [tf.config.LogicalDeviceConfiguration()] * num_replicas
        )
    except RuntimeError as e:
        existing = len(tf.config.list_logical_devices("CPU"))
        if existing != num_replicas:
            raise ValueError(
                f"--num_cpu_replicas={num_replicas}: TensorFlow was already "
                f"initialised with {existing} logical CPU device(s)."
            ) from e


def _mirrored_devices():
    gpus = tf.config.list_logical_devices("GPU")
    return [d.name for d in (gpus or tf.config.list_logical_devices("CPU"))]


def create_strategy(name="auto"):
    """Builds the tf.distribute strategy called `name` (one of STRATEGIES).

    Call split_cpu first when logical CPU replicas are wanted.
    """
    if name not in STRATEGIES:
        raise ValueError(f"Unknown strategy {name!r}; choose one of {STRATEGIES}.")
    if name == "multi_worker":
        if not os.environ.get("TF_CONFIG"):
            logging.warning("--strategy=multi_worker without TF_CONFIG: a cluster of one worker.")
        return tf.distribute.MultiWorkerMirroredStrategy()
    gpus = tf.config.list_logical_devices("GPU")
    if name == "one_device" or (name == "auto" and not gpus and len(_mirrored_devices()) == 1):
        return tf.distribute.OneDeviceStrategy(gpus[0].name if gpus else "/cpu:0")
    devices = _mirrored_devices()
    if not gpus:
        # NCCL is GPU-only; the CPU replicas all-reduce through the host.
        return tf.distribute.MirroredStrategy(
            devices, cross_device_ops=tf.distribute.ReductionToOneDevice()
        )
    return tf.distribute.MirroredStrategy(devices)


def _task(strategy):
    resolver = getattr(strategy, "cluster_resolver", None)
    if resolver is None or not resolver.cluster_spec().as_dict():
        return None, None
    return resolver.task_type, resolver.task_id


def is_chief(strategy):
    """True for the worker that writes the real checkpoints, summaries and images."""
    task_type, task_id = _task(strategy)
    if task_type is None:
        return True
    has_chief = "chief" in json.loads(os.environ.get("TF_CONFIG", "{}")).get("cluster", {})
    if has_chief:
        return task_type == "chief"
    return task_type == "worker" and task_id == 0


def write_dir(directory, strategy):
    """`directory` on the chief; a private temporary directory on every other worker."""
    if is_chief(strategy):
        return directory
    task_type, task_id = _task(strategy)
    return posixpath.join(directory, ".tmp_workers", f"{task_type}_{task_id}")


def remove_worker_dir(directory, strategy):
    """Deletes a non-chief worker's temporary directory (nothing on the chief)."""
    if is_chief(strategy) or not tf.io.gfile.exists(directory):
        return
    tf.io.gfile.rmtree(directory)
    parent = posixpath.dirname(directory)
    try:
        if not tf.io.gfile.listdir(parent):
            tf.io.gfile.rmtree(parent)
    except tf.errors.OpError:
        pass  # another worker's directory is still there, or it removed the parent first
