"""Where a trained generator lives in a model_dir, and how evaluation and export load it.

  MODEL_DIR/generator.json      GeneratorConfig: the builder arguments (written by the trainer)
  MODEL_DIR/pretrain/ckpt-N.*   CheckpointManager directory of --phase=pretrain
  MODEL_DIR/gan/ckpt-N.*        CheckpointManager directory of --phase=gan

Every training checkpoint holds the generator under the key `generator` (plus the optimizers,
the step, in the GAN phase the discriminator, and with --ema_decay the generator's moving average
under trainer.ema.EMA_KEY); loading reads one generator alone: the EMA when the checkpoint has
one, unless the raw weights are asked for.
"""

import dataclasses
import json
import posixpath

import tensorflow as tf

from trainer import models
from trainer.config import COMPACT, GAN, PRETRAIN, RRDB, SRRESNET, GeneratorConfig

CONFIG_FILENAME = "generator.json"
GENERATOR_KEY = "generator"
EMA_KEY = "generator_ema"  # the generator's moving average (trainer.ema)
WEIGHTS = ("ema", "raw")


def build_generator(config: GeneratorConfig):
    """The Keras generator a GeneratorConfig describes (its architecture's builder)."""
    sizes = {
        "scale": config.scale,
        "num_blocks": config.num_blocks,
        "channels": config.channels,
        "bicubic_skip": config.bicubic_skip,
    }
    if config.architecture == RRDB:
        return models.rrdb_generator(growth=config.growth, **sizes)
    if config.architecture == COMPACT:
        return models.compact_generator(**sizes)
    return models.srresnet_generator(**sizes)


def receptive_radius(config: GeneratorConfig):
    """The generator's receptive-field radius in LR pixels (a conv in an x f stage counts 1/f).

    What a tile needs as context for its output to equal the untiled one exactly; trained
    networks get within a grey level with much less (serving.export_lib.default_overlap).
    """
    lr_convs = {
        SRRESNET: 4 + 2 * config.num_blocks + 1,  # 9x9 head, 2 per block, the trunk conv
        RRDB: 1 + 15 * config.num_blocks + 1,  # head, 3 dense blocks of 5 convs, trunk conv
        COMPACT: config.num_blocks + 2,  # head, body, the conv before the shuffle
    }[config.architecture]
    radius, upscaled = float(lr_convs), 1
    stages = () if config.architecture == COMPACT else models.upsample_factors(config.scale)
    for factor in stages:
        upscaled *= factor
        # srresnet's stage conv runs before its shuffle; rrdb's after its nearest upscale.
        radius += 1.0 / (upscaled if config.architecture == RRDB else upscaled // factor)
    if config.architecture == SRRESNET:
        radius += 4.0 / config.scale  # the 9x9 output conv
    elif config.architecture == RRDB:
        radius += 2.0 / config.scale  # conv_hr and conv_last
    return radius


def phase_dir(model_dir, phase):
    return posixpath.join(model_dir, phase)


def write_config(model_dir, config: GeneratorConfig):
    """Writes generator.json, refusing a model_dir that already holds a different generator."""
    path = posixpath.join(model_dir, CONFIG_FILENAME)
    if tf.io.gfile.exists(path):
        existing = read_config(model_dir)
        if existing != config:
            raise ValueError(
                f"{model_dir} holds a generator built as {existing}; this run asks "
                f"for {config}. Use another --model_dir."
            )
        return
    tf.io.gfile.makedirs(model_dir)
    with tf.io.gfile.GFile(path, "w") as f:
        f.write(json.dumps(dataclasses.asdict(config), indent=2))


def read_config(model_dir) -> GeneratorConfig:
    """The GeneratorConfig of a model_dir's generator.json (its scale is the model's scale)."""
    path = posixpath.join(model_dir, CONFIG_FILENAME)
    if not tf.io.gfile.exists(path):
        raise FileNotFoundError(f"{path} not found: {model_dir} is not a trainer model_dir.")
    with tf.io.gfile.GFile(path) as f:
        return GeneratorConfig(**json.load(f))


def _is_checkpoint_prefix(path):
    return tf.io.gfile.exists(path + ".index")


def resolve_checkpoint(path, phase=None):
    """(model_dir, checkpoint prefix) for a model_dir (newest: gan, else pretrain) or a prefix.

    With `phase`, a model_dir resolves to that phase's newest checkpoint only.
    """
    if _is_checkpoint_prefix(path):
        model_dir = posixpath.dirname(posixpath.dirname(path.rstrip("/")))
        return model_dir, path
    phases = (GAN, PRETRAIN) if phase is None else (phase,)
    for name in phases:
        prefix = tf.train.latest_checkpoint(phase_dir(path, name))
        if prefix:
            return path, prefix
    raise FileNotFoundError(
        f"No generator checkpoint under {path} (looked in "
        + " and ".join(phase_dir(path, name) for name in phases)
        + ")."
    )


def checkpoint_has_ema(prefix):
    """True when the checkpoint at `prefix` holds a generator EMA (trained with --ema_decay)."""
    return any(name.startswith(EMA_KEY + "/") for name, _ in tf.train.list_variables(prefix))


def resolve_weights(prefix, weights=None):
    """The checkpoint key to read: "ema" or "raw"; None means the EMA when there is one.

    Raises:
      ValueError: "ema" asked of a checkpoint without one, or an unknown choice.
    """
    if weights is not None and weights not in WEIGHTS:
        raise ValueError(f"weights must be one of {WEIGHTS}, got {weights!r}.")
    has_ema = checkpoint_has_ema(prefix)
    if weights == "ema" and not has_ema:
        raise ValueError(
            f"{prefix} holds no generator EMA (the run had no --ema_decay); use the raw weights."
        )
    if weights is None:
        weights = "ema" if has_ema else "raw"
    return weights


def load_generator(path, weights=None, phase=None):
    """Builds the generator and restores its weights.

    Args:
      path: a trainer model_dir (newest checkpoint of the newest phase) or a checkpoint prefix
        such as MODEL_DIR/pretrain/ckpt-5.
      weights: "ema", "raw", or None: the EMA when the checkpoint has one, else the raw weights.
      phase: with a model_dir, take this phase's newest checkpoint instead of the newest phase.

    Returns:
      (keras.Model, GeneratorConfig, checkpoint prefix); the model's `restored_weights`
      attribute says which weights were read ("ema" or "raw").
    """
    model_dir, prefix = resolve_checkpoint(path, phase)
    config = read_config(model_dir)
    weights = resolve_weights(prefix, weights)
    generator = build_generator(config)
    key = EMA_KEY if weights == "ema" else GENERATOR_KEY
    status = tf.train.Checkpoint(**{key: generator}).read(prefix)
    status.expect_partial().assert_existing_objects_matched()
    generator.restored_weights = weights
    return generator, config, prefix
