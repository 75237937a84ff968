"""SRGAN losses: per-example values, averaged over the GLOBAL batch for tf.distribute.

Every function here returns one float32 value per example ([B]); `average` turns that into the
replica's share of the global mean (tf.nn.compute_average_loss), so summing the replicas' values
(what the optimizers' gradient all-reduce does) gives the mean over the global batch.

Value ranges follow trainer.value_range: HR and generator output in [-1, 1]; the discriminator
returns one logit per image.
"""

import tensorflow as tf

from trainer import config


def _flat(images):
    images = tf.cast(images, tf.float32)
    return tf.reshape(images, [tf.shape(images)[0], -1])


def pixel_loss(hr, sr, kind="mse"):
    """Per-example mean squared ("mse") or absolute ("l1") pixel difference, float32 [B]."""
    diff = _flat(hr) - _flat(sr)
    if kind == "mse":
        return tf.reduce_mean(tf.square(diff), axis=1)
    if kind == "l1":
        return tf.reduce_mean(tf.abs(diff), axis=1)
    raise ValueError(f"pixel loss must be one of {config.PIXEL_LOSSES}, got {kind!r}.")


def _bce_with_logits(labels_value, logits):
    logits = tf.reshape(tf.cast(logits, tf.float32), [tf.shape(logits)[0]])
    labels = tf.fill(tf.shape(logits), labels_value)
    return tf.nn.sigmoid_cross_entropy_with_logits(labels=labels, logits=logits)


def discriminator_loss(real_logits, fake_logits):
    """Per-example BCE: -log D(hr) - log(1 - D(sr)), float32 [B]."""
    return _bce_with_logits(1.0, real_logits) + _bce_with_logits(0.0, fake_logits)


def generator_adversarial_loss(fake_logits):
    """Per-example -log D(G(lr)) (the paper's non-saturating form), float32 [B]."""
    return _bce_with_logits(1.0, fake_logits)


def probability(logits):
    """Per-example D output as a probability, float32 [B] (for the d_real / d_fake metrics)."""
    return tf.sigmoid(tf.reshape(tf.cast(logits, tf.float32), [tf.shape(logits)[0]]))


def average(per_example, global_batch_size=None):
    """This replica's share of the global-batch mean of a per-example loss (a float32 scalar).

    Without `global_batch_size`, the global batch is this replica's batch times the replicas in
    sync (tf.nn.compute_average_loss): the step needs no batch-size setting of its own.
    """
    return tf.nn.compute_average_loss(per_example, global_batch_size=global_batch_size)
