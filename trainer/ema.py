"""The exponential moving average (EMA) of the generator's weights (ESRGAN / BasicSR model_ema).

After every step: ema = decay * ema + (1 - decay) * weights, for the trainable weights; the
non-trainable ones (BatchNorm statistics) are copied, as BasicSR averages parameters only.
The EMA generator is a second model of the same GeneratorConfig, checkpointed under EMA_KEY,
and validation, evaluation and export use it when there is one.
"""

import tensorflow as tf

from trainer.generator_store import EMA_KEY  # noqa: F401 (the checkpoint key, re-exported)


def _pairs(ema_generator, generator):
    trainable = zip(ema_generator.trainable_weights, generator.trainable_weights, strict=True)
    frozen = zip(ema_generator.non_trainable_weights, generator.non_trainable_weights, strict=True)
    return list(trainable), list(frozen)


def update(ema_generator, generator, decay):
    """One EMA step (call in cross-replica context: each assignment reaches every replica)."""
    trainable, frozen = _pairs(ema_generator, generator)
    for average, weight in trainable:
        value = tf.convert_to_tensor(weight)
        average.assign(decay * tf.convert_to_tensor(average) + (1.0 - decay) * value)
    for average, weight in frozen:
        average.assign(tf.convert_to_tensor(weight))


def copy(ema_generator, generator):
    """Sets the EMA to the generator's weights (a run's start, or a checkpoint without an EMA)."""
    trainable, frozen = _pairs(ema_generator, generator)
    for average, weight in trainable + frozen:
        average.assign(weight.numpy() if hasattr(weight, "numpy") else weight)


def closed_form(initial, updates, decay):
    """The EMA after k steps whose weights were updates[0..k-1], starting from `initial`:
    decay^k * initial + sum_i (1 - decay) * decay^(k-1-i) * updates[i] (a reference for tests)."""
    k = len(updates)
    value = decay**k * initial
    for i, weights in enumerate(updates):
        value = value + (1.0 - decay) * decay ** (k - 1 - i) * weights
    return value
