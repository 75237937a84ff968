"""SRGAN / ESRGAN losses: per-example values, averaged over the GLOBAL batch for tf.distribute.

Every function here returns one float32 value per example ([B]); `average` turns that into the
replica's share of the global mean (tf.nn.compute_average_loss), so summing the replicas' values
(what the optimizers' gradient all-reduce does) gives the mean over the global batch.

Value ranges follow trainer.value_range: HR and generator output in [-1, 1]; the discriminator
returns one logit per image ([B, 1], SRGAN's) or one per pixel ([B, H, W, 1], the U-Net's). A
per-example adversarial value is the mean over that example's logits, so the global-batch mean
is the mean over every logit of the batch: BasicSR's BCEWithLogitsLoss(reduction="mean").

Relativistic average GAN (ESRGAN, Jolicoeur-Martineau 2018), with C the raw logits:
  D_Ra(x_r, x_f) = sigmoid(C(x_r) - E[C(x_f)])   D_Ra(x_f, x_r) = sigmoid(C(x_f) - E[C(x_r)])
  L_D = -E[log D_Ra(x_r, x_f)] - E[log(1 - D_Ra(x_f, x_r))]
  L_G = -E[log(1 - D_Ra(x_r, x_f))] - E[log D_Ra(x_f, x_r)]
Each expectation is over the global batch and every logit of it (BasicSR's torch.mean over the
batch and pixels). BasicSR weighs each of the two terms by 1/2 (ESRGANModel: l_d_real * 0.5,
l_d_fake * 0.5; l_g_gan = (l_g_real + l_g_fake) / 2); so do these functions, so that a ragan
loss is on the scale of a bce one and ESRGAN's adversarial weight 5e-3 applies as published.
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
    logits = _flat(logits)
    labels = tf.fill(tf.shape(logits), labels_value)
    return tf.reduce_mean(
        tf.nn.sigmoid_cross_entropy_with_logits(labels=labels, logits=logits), axis=1
    )


def global_mean(logits):
    """The mean of every logit over the GLOBAL batch (all replicas), a float32 scalar.

    In a replica context of several replicas the sums and counts are all-reduced; the all-reduce
    is differentiable, so the gradient reaches every replica's logits. Elsewhere it is the mean.
    """
    logits = tf.cast(logits, tf.float32)
    context = tf.distribute.get_replica_context()
    if context is None or context.num_replicas_in_sync == 1:
        return tf.reduce_mean(logits)
    total = context.all_reduce(tf.distribute.ReduceOp.SUM, tf.reduce_sum(logits))
    count = context.all_reduce(tf.distribute.ReduceOp.SUM, tf.cast(tf.size(logits), tf.float32))
    return total / count


def relativistic_discriminator_loss(real_logits, fake_logits):
    """Per-example RaGAN discriminator loss (halved terms, see the module docstring), float32 [B].

    Both averages are over the global batch; gradients flow through both (call it with the
    generator's output already stopped).
    """
    real_logits, fake_logits = tf.cast(real_logits, tf.float32), tf.cast(fake_logits, tf.float32)
    real_term = _bce_with_logits(1.0, real_logits - global_mean(fake_logits))
    fake_term = _bce_with_logits(0.0, fake_logits - global_mean(real_logits))
    return 0.5 * (real_term + fake_term)


def relativistic_generator_loss(real_logits, fake_logits):
    """Per-example RaGAN generator loss, float32 [B]: both terms (the real images' too).

    The real logits are constants here (BasicSR detaches them); the fake ones carry the gradient,
    including through the real term's E[C(x_f)].
    """
    real_logits = tf.stop_gradient(tf.cast(real_logits, tf.float32))
    fake_logits = tf.cast(fake_logits, tf.float32)
    real_term = _bce_with_logits(0.0, real_logits - global_mean(fake_logits))
    fake_term = _bce_with_logits(1.0, fake_logits - global_mean(real_logits))
    return 0.5 * (real_term + fake_term)


def discriminator_loss(real_logits, fake_logits):
    """Per-example BCE: -log D(hr) - log(1 - D(sr)), float32 [B]."""
    return _bce_with_logits(1.0, real_logits) + _bce_with_logits(0.0, fake_logits)


def generator_adversarial_loss(fake_logits):
    """Per-example -log D(G(lr)) (the paper's non-saturating form), float32 [B]."""
    return _bce_with_logits(1.0, fake_logits)


def probability(logits):
    """Per-example mean D output as a probability, float32 [B] (the d_real / d_fake metrics)."""
    return tf.reduce_mean(tf.sigmoid(_flat(logits)), axis=1)


def average(per_example, global_batch_size=None):
    """This replica's share of the global-batch mean of a per-example loss (a float32 scalar).

    Without `global_batch_size`, the global batch is this replica's batch times the replicas in
    sync (tf.nn.compute_average_loss): the step needs no batch-size setting of its own.
    """
    return tf.nn.compute_average_loss(per_example, global_batch_size=global_batch_size)
