"""Where a trained generator lives in a model_dir, and how evaluation and export load it.

  MODEL_DIR/generator.json      GeneratorConfig: the builder arguments (written by the trainer)
  MODEL_DIR/pretrain/ckpt-N.*   CheckpointManager directory of --phase=pretrain
  MODEL_DIR/gan/ckpt-N.*        CheckpointManager directory of --phase=gan

Every training checkpoint holds the generator under the key `generator` (plus the optimizers,
the step and, in the GAN phase, the discriminator); loading reads the generator alone.
"""

import dataclasses
import json
import posixpath

import tensorflow as tf

from trainer import models
from trainer.config import GAN, PRETRAIN, GeneratorConfig

CONFIG_FILENAME = "generator.json"
GENERATOR_KEY = "generator"


def build_generator(config: GeneratorConfig):
    return models.srresnet_generator(
        scale=config.scale,
        num_blocks=config.num_blocks,
        channels=config.channels,
        bicubic_skip=config.bicubic_skip,
    )


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


def resolve_checkpoint(path):
    """(model_dir, checkpoint prefix) for a model_dir (newest: gan, else pretrain) or a prefix."""
    if _is_checkpoint_prefix(path):
        model_dir = posixpath.dirname(posixpath.dirname(path.rstrip("/")))
        return model_dir, path
    for phase in (GAN, PRETRAIN):
        prefix = tf.train.latest_checkpoint(phase_dir(path, phase))
        if prefix:
            return path, prefix
    raise FileNotFoundError(
        f"No generator checkpoint under {path} (looked in "
        f"{phase_dir(path, GAN)} and {phase_dir(path, PRETRAIN)})."
    )


def load_generator(path):
    """Builds the generator and restores its weights.

    Args:
      path: a trainer model_dir (newest checkpoint of the newest phase) or a checkpoint prefix
        such as MODEL_DIR/pretrain/ckpt-5.

    Returns:
      (keras.Model, GeneratorConfig, checkpoint prefix)
    """
    model_dir, prefix = resolve_checkpoint(path)
    config = read_config(model_dir)
    generator = build_generator(config)
    status = tf.train.Checkpoint(**{GENERATOR_KEY: generator}).read(prefix)
    status.expect_partial().assert_existing_objects_matched()
    return generator, config, prefix
