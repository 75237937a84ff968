"""Trains SRResNet (--phase=pretrain) or SRGAN (--phase=gan) on a data_prep output.

  python -m trainer.train --flagfile=configs/quickstart.flags --phase=pretrain \
      --data_dir=DATA --model_dir=MODEL
  python -m trainer.train --flagfile=configs/quickstart.flags --phase=gan \
      --data_dir=DATA --model_dir=MODEL

Rerunning the same command resumes from the phase's latest checkpoint and continues to
--train_steps (a total). The scale comes from the dataset's manifest.
"""

import logging as std_logging
import os
import sys

from absl import app, flags, logging

from trainer import strategy as strategy_lib

_DATA_DIR = flags.DEFINE_string("data_dir", None, "A data_prep.build_tfrecords output directory.")
_MODEL_DIR = flags.DEFINE_string("model_dir", None, "Checkpoints, summaries and images go here.")
_PHASE = flags.DEFINE_enum(
    "phase",
    "pretrain",
    ["pretrain", "gan"],
    "pretrain: pixel loss (SRResNet); gan: content + adversarial (SRGAN).",
)
_TRAIN_STEPS = flags.DEFINE_integer("train_steps", 1000, "Total steps of the phase.")
_GAN_TRAIN_STEPS = flags.DEFINE_integer(
    "gan_train_steps", None, "Total steps of the gan phase (default: --train_steps)."
)
_BATCH_SIZE = flags.DEFINE_integer("batch_size", 16, "Global batch size (all replicas).")
_HR_PATCH_SIZE = flags.DEFINE_integer("hr_patch_size", 96, "HR patch side (multiple of 16).")
_CROPS_PER_IMAGE = flags.DEFINE_integer(
    "crops_per_image", None, "Patches cut per decoded image (default: the pipeline's)."
)
_SHUFFLE_BUFFER = flags.DEFINE_integer("shuffle_buffer", None, "Patch shuffle buffer.")
_NUM_BLOCKS = flags.DEFINE_integer("num_blocks", 16, "Generator residual blocks.")
_CHANNELS = flags.DEFINE_integer("channels", 64, "Generator feature channels.")
_BICUBIC_SKIP = flags.DEFINE_bool(
    "bicubic_skip", False, "Generator adds the bicubic upscale (learns the residual)."
)
_LEARNING_RATES = flags.DEFINE_list(
    "learning_rates", ["1e-4"], "Piecewise-constant learning rates."
)
_LEARNING_RATE = flags.DEFINE_float(
    "learning_rate", None, "One constant learning rate (overrides --learning_rates)."
)
_LR_BOUNDARIES = flags.DEFINE_list(
    "lr_boundaries", [], "Steps where the next learning rate starts."
)
_GAN_LEARNING_RATES = flags.DEFINE_list(
    "gan_learning_rates", None, "Learning rates of the gan phase (default: the same)."
)
_GAN_LR_BOUNDARIES = flags.DEFINE_list(
    "gan_lr_boundaries", None, "Boundaries of the gan phase (default: the same)."
)
_BETA_1 = flags.DEFINE_float("beta_1", 0.9, "Adam beta_1.")
_BETA_2 = flags.DEFINE_float("beta_2", 0.999, "Adam beta_2.")
_PIXEL_LOSS = flags.DEFINE_enum("pixel_loss", "mse", ["mse", "l1"], "Pixel loss.")
_CONTENT_WEIGHT = flags.DEFINE_float("content_weight", 1.0, "GAN: perceptual loss weight.")
_ADVERSARIAL_WEIGHT = flags.DEFINE_float("adversarial_weight", 1e-3, "GAN: adversarial weight.")
_PIXEL_WEIGHT = flags.DEFINE_float("pixel_weight", 0.0, "GAN: pixel loss weight.")
_PERCEPTUAL_NETWORK = flags.DEFINE_enum(
    "perceptual_network", "vgg54", ["vgg54", "resnet152v2"], "Content-loss feature network."
)
_PERCEPTUAL_WEIGHTS = flags.DEFINE_string(
    "perceptual_weights",
    "imagenet",
    "imagenet (Keras download), a local no-top weights file, or none (random: tests only).",
)
_STRATEGY = flags.DEFINE_enum(
    "strategy", "auto", list(strategy_lib.STRATEGIES), "tf.distribute strategy."
)
_NUM_CPU_REPLICAS = flags.DEFINE_integer(
    "num_cpu_replicas", 0, "Split the CPU into this many logical devices (>1)."
)
_MIXED_PRECISION = flags.DEFINE_bool("mixed_precision", False, "mixed_float16 + loss scaling.")
_XLA = flags.DEFINE_enum(
    "xla",
    "default",
    ["default", "off", "step", "auto"],
    "XLA: off, step (jit_compile the step), auto (auto-clustering), or "
    "default (the fastest mode that works for the device and strategy).",
)
_JIT_COMPILE = flags.DEFINE_bool("jit_compile", None, "Alias: --jit_compile means --xla=step.")
_STEPS_PER_LOOP = flags.DEFINE_integer("steps_per_loop", 1, "Steps per tf.function call.")
_CHECKPOINT_STEPS = flags.DEFINE_integer("checkpoint_steps", 1000, "Save every N steps.")
_MAX_CHECKPOINTS = flags.DEFINE_integer("max_checkpoints", 5, "Checkpoints kept per phase.")
_LOG_STEPS = flags.DEFINE_integer("log_steps", 100, "Progress line and scalars every N steps.")
_EVAL_STEPS = flags.DEFINE_integer("eval_steps", 0, "Validation PSNR/SSIM every N steps (0: off).")
_IMAGE_STEPS = flags.DEFINE_integer("image_steps", 0, "LR/bicubic/SR/HR grids every N steps.")
_INIT_CHECKPOINT = flags.DEFINE_string(
    "init_checkpoint",
    None,
    "Checkpoint prefix whose generator starts a phase that has no "
    "checkpoint of its own (gan default: the pretrain phase's latest).",
)
_SEED = flags.DEFINE_integer("seed", None, "Seeds weights and the input stream.")
_REPLAY_INPUT_ON_RESUME = flags.DEFINE_bool(
    "replay_input_on_resume",
    False,
    "With --seed: a resumed run skips the batches already "
    "consumed and continues the uninterrupted run's exact stream (slow late in long runs).",
)


def _phase_value(phase, common, gan):
    return gan if phase == "gan" and gan is not None else common


def _config():
    from trainer import loop, losses, train_state  # after the CPU split: they initialise TF

    phase = _PHASE.value
    rates = [_LEARNING_RATE.value] if _LEARNING_RATE.value is not None else _LEARNING_RATES.value
    boundaries = [] if _LEARNING_RATE.value is not None else _LR_BOUNDARIES.value
    xla = "step" if _JIT_COMPILE.value else ("off" if _JIT_COMPILE.value is False else _XLA.value)
    return loop.TrainConfig(
        data_dir=_DATA_DIR.value,
        model_dir=_MODEL_DIR.value,
        phase=phase,
        train_steps=_phase_value(phase, _TRAIN_STEPS.value, _GAN_TRAIN_STEPS.value),
        global_batch_size=_BATCH_SIZE.value,
        hr_patch_size=_HR_PATCH_SIZE.value,
        num_blocks=_NUM_BLOCKS.value,
        channels=_CHANNELS.value,
        bicubic_skip=_BICUBIC_SKIP.value,
        optimizer=train_state.OptimizerConfig(
            learning_rates=tuple(
                float(r) for r in _phase_value(phase, rates, _GAN_LEARNING_RATES.value)
            ),
            lr_boundaries=tuple(
                int(b) for b in _phase_value(phase, boundaries, _GAN_LR_BOUNDARIES.value)
            ),
            beta_1=_BETA_1.value,
            beta_2=_BETA_2.value,
            mixed_precision=_MIXED_PRECISION.value,
        ),
        loss=losses.LossConfig(
            pixel_loss=_PIXEL_LOSS.value,
            content_weight=_CONTENT_WEIGHT.value,
            adversarial_weight=_ADVERSARIAL_WEIGHT.value,
            pixel_weight=_PIXEL_WEIGHT.value,
        ),
        perceptual_network=_PERCEPTUAL_NETWORK.value,
        perceptual_weights=_PERCEPTUAL_WEIGHTS.value,
        steps_per_loop=_STEPS_PER_LOOP.value,
        xla=xla,
        checkpoint_steps=_CHECKPOINT_STEPS.value,
        max_checkpoints=_MAX_CHECKPOINTS.value,
        log_steps=_LOG_STEPS.value,
        eval_steps=_EVAL_STEPS.value,
        image_steps=_IMAGE_STEPS.value,
        init_checkpoint=_INIT_CHECKPOINT.value,
        seed=_SEED.value,
        replay_input_on_resume=_REPLAY_INPUT_ON_RESUME.value,
        crops_per_image=_CROPS_PER_IMAGE.value,
        shuffle_buffer=_SHUFFLE_BUFFER.value,
    )


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"Unexpected arguments: {argv[1:]}")
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    strategy_lib.split_cpu(_NUM_CPU_REPLICAS.value)
    # tf.distribute logs every all-reduce plan at INFO; keep the console for the progress line.
    std_logging.getLogger("tensorflow").setLevel(std_logging.WARNING)
    from trainer import loop  # noqa: F401 - imported after the CPU split

    try:
        config = _config()
        strategy = strategy_lib.create_strategy(_STRATEGY.value)
        logging.info(
            "Strategy %s with %d replica(s).",
            type(strategy).__name__,
            strategy.num_replicas_in_sync,
        )
        step, metrics = loop.train(config, strategy)
    except loop.NonFiniteLossError as e:
        sys.exit(f"error: {e}")
    except (ValueError, FileNotFoundError) as e:  # bad flags or data: a message, not a trace
        sys.exit(f"error: {e}")
    logging.info("Done: step %d, %s", step, metrics)


if __name__ == "__main__":
    flags.mark_flags_as_required(["data_dir", "model_dir"])
    app.run(main)
