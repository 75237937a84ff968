"""Trains a generator (--phase=pretrain) then its GAN (--phase=gan) on a data_prep output.

SRGAN (the default: --generator=srresnet --discriminator=vgg --gan_loss=bce) or ESRGAN /
Real-ESRGAN parts (--generator=rrdb|compact, --discriminator=unet, --gan_loss=ragan,
--perceptual_network=vgg19 --perceptual_layers=..., --ema_decay); see configs/esrgan.flags.

  python -m trainer.train --flagfile=configs/quickstart.flags --phase=pretrain \
      --data_dir=DATA --model_dir=MODEL
  python -m trainer.train --flagfile=configs/quickstart.flags --phase=gan \
      --data_dir=DATA --model_dir=MODEL

Rerunning the same command resumes from the phase's latest checkpoint and continues to
--train_steps (a total). The scale comes from the dataset's manifest.
"""

import srgan_cli

srgan_cli.quiet_console()  # before TensorFlow is imported
srgan_cli.import_tensorflow()  # without its C++ start-up lines

import dataclasses  # noqa: E402
import sys  # noqa: E402

from absl import app, flags, logging  # noqa: E402

from trainer import config as config_lib  # noqa: E402
from trainer import strategy as strategy_lib  # noqa: E402

_DATA_DIR = flags.DEFINE_string("data_dir", None, "A data_prep.build_tfrecords output directory.")
_MODEL_DIR = flags.DEFINE_string("model_dir", None, "Checkpoints, summaries and images go here.")
_PHASE = flags.DEFINE_enum(
    "phase",
    config_lib.PRETRAIN,
    list(config_lib.PHASES),
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
_GENERATOR = flags.DEFINE_enum(
    "generator",
    config_lib.SRRESNET,
    list(config_lib.GENERATORS),
    "srresnet (SRGAN), rrdb (ESRGAN RRDBNet), compact (Real-ESRGAN SRVGGNetCompact).",
)
_NUM_BLOCKS = flags.DEFINE_integer(
    "num_blocks",
    None,
    "Generator blocks: srresnet residual blocks (16), rrdb RRDBs (23), compact body convs (16). "
    "Default: the generator's reference size.",
)
_CHANNELS = flags.DEFINE_integer(
    "channels", None, "Generator feature channels (default: the generator's reference, 64)."
)
_GROWTH = flags.DEFINE_integer(
    "growth", None, "rrdb only: dense-block growth channels (default 32)."
)
_DISCRIMINATOR = flags.DEFINE_enum(
    "discriminator",
    "vgg",
    list(config_lib.DISCRIMINATORS),
    "GAN discriminator: vgg (SRGAN, one logit per image) or unet (Real-ESRGAN "
    "UNetDiscriminatorSN, per-pixel logits).",
)
_DISCRIMINATOR_CHANNELS = flags.DEFINE_integer(
    "discriminator_channels", 64, "The discriminator's first-layer features."
)
_GAN_LOSS = flags.DEFINE_enum(
    "gan_loss",
    "bce",
    list(config_lib.GAN_LOSSES),
    "Adversarial loss: bce (SRGAN) or ragan (ESRGAN relativistic average GAN).",
)
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
_PIXEL_LOSS = flags.DEFINE_enum("pixel_loss", "mse", list(config_lib.PIXEL_LOSSES), "Pixel loss.")
_CONTENT_WEIGHT = flags.DEFINE_float("content_weight", 1.0, "GAN: perceptual loss weight.")
_ADVERSARIAL_WEIGHT = flags.DEFINE_float("adversarial_weight", 1e-3, "GAN: adversarial weight.")
_PIXEL_WEIGHT = flags.DEFINE_float("pixel_weight", 0.0, "GAN: pixel loss weight.")
_PERCEPTUAL_NETWORK = flags.DEFINE_string(
    "perceptual_network",
    "vgg54",
    "Content-loss feature network: vgg54, resnet152v2, or vgg19 (layers from "
    "--perceptual_layers, before their ReLU).",
)
_PERCEPTUAL_LAYERS = flags.DEFINE_string(
    "perceptual_layers",
    None,
    "vgg19 only: weighted layers before activation, e.g. "
    "conv1_2:0.1,conv2_2:0.1,conv3_4:1,conv4_4:1,conv5_4:1 (default conv5_4:1).",
)
_PERCEPTUAL_CRITERION = flags.DEFINE_enum(
    "perceptual_criterion",
    None,
    list(config_lib.PIXEL_LOSSES),
    "Feature distance (default: mse for vgg54/resnet152v2, l1 for vgg19).",
)
_PERCEPTUAL_WEIGHTS = flags.DEFINE_string(
    "perceptual_weights",
    "auto",
    "auto (ImageNet from the Keras cache or a download; random features with a warning when "
    "neither works), imagenet (Keras download; an error when it fails), a local no-top weights "
    "file, or none (random: tests only). The gan phase logs and records its choice in "
    "MODEL_DIR/gan/perceptual_weights.json.",
)
_STRATEGY = flags.DEFINE_enum(
    "strategy", "auto", list(strategy_lib.STRATEGIES), "tf.distribute strategy."
)
_NUM_CPU_REPLICAS = flags.DEFINE_integer(
    "num_cpu_replicas", 0, "Split the CPU into this many logical devices (>1)."
)
_MIXED_PRECISION = flags.DEFINE_bool("mixed_precision", False, "mixed_float16 + loss scaling.")
_EMA_DECAY = flags.DEFINE_float(
    "ema_decay",
    0.0,
    "Keep an exponential moving average of the generator (ESRGAN: 0.999); validation, "
    "evaluation and export use it. 0: off.",
)
_XLA = flags.DEFINE_enum(
    "xla",
    config_lib.XLA_DEFAULT,
    [config_lib.XLA_DEFAULT, *config_lib.XLA_MODES],
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
_DEGRADATION = flags.DEFINE_enum(
    "degradation",
    "none",
    list(config_lib.DEGRADATIONS),
    "How the training LR is made: none (the dataset's stored LR; paired datasets) or realesrgan "
    "(Real-ESRGAN's second-order blur / resize / noise / JPEG pipeline applied to HR patches on "
    "the fly; HR-only or paired datasets).",
)
_DEGRADE_ON = flags.DEFINE_enum(
    "degrade_on",
    "device",
    list(config_lib.DEGRADE_ON),
    "With --degradation: where the LR is synthesised: device (each replica, at the start of "
    "the step) or input (the tf.data pipeline); the same degradations either way.",
)
_USM_TARGETS = flags.DEFINE_bool(
    "usm_targets",
    False,
    "Unsharp-masked HR targets for the pixel and perceptual losses (Real-ESRGAN's l1_gt_usm / "
    "percep_gt_usm); the discriminator sees the plain HR.",
)
_SEED = flags.DEFINE_integer(
    "seed", None, "Seeds weights, the input stream and the degradations (None: random)."
)
_REPLAY_INPUT_ON_RESUME = flags.DEFINE_bool(
    "replay_input_on_resume",
    False,
    "With --seed: a resumed run skips the batches already "
    "consumed and continues the uninterrupted run's exact stream (slow late in long runs).",
)


def _phase_value(phase, common, gan):
    return gan if phase == config_lib.GAN and gan is not None else common


def _schedule(phase):
    rates = [_LEARNING_RATE.value] if _LEARNING_RATE.value is not None else _LEARNING_RATES.value
    boundaries = [] if _LEARNING_RATE.value is not None else _LR_BOUNDARIES.value
    return config_lib.ScheduleConfig(
        train_steps=_phase_value(phase, _TRAIN_STEPS.value, _GAN_TRAIN_STEPS.value),
        learning_rates=tuple(_phase_value(phase, rates, _GAN_LEARNING_RATES.value)),
        lr_boundaries=tuple(_phase_value(phase, boundaries, _GAN_LR_BOUNDARIES.value)),
    )


def _xla_flag():
    if _JIT_COMPILE.value is None:
        return _XLA.value
    return "step" if _JIT_COMPILE.value else "off"


def _input_config():
    optional = {"crops_per_image": _CROPS_PER_IMAGE.value, "shuffle_buffer": _SHUFFLE_BUFFER.value}
    return config_lib.InputConfig(
        hr_patch_size=_HR_PATCH_SIZE.value,
        global_batch_size=_BATCH_SIZE.value,
        **{name: value for name, value in optional.items() if value is not None},
    )


def _check_degradation_flags():
    if _DEGRADATION.value == "none" and flags.FLAGS["degrade_on"].present:
        raise app.UsageError("--degrade_on applies with --degradation=realesrgan only.")


def _config(scale, xla):
    """The run's RunConfig from the flags; `scale` is the dataset's, `xla` the resolved mode."""
    phase = _PHASE.value
    return config_lib.RunConfig(
        model_dir=_MODEL_DIR.value,
        generator=config_lib.GeneratorConfig(
            scale=scale,
            num_blocks=_NUM_BLOCKS.value,
            channels=_CHANNELS.value,
            bicubic_skip=_BICUBIC_SKIP.value,
            architecture=_GENERATOR.value,
            growth=_GROWTH.value,
        ),
        discriminator=config_lib.DiscriminatorConfig(
            architecture=_DISCRIMINATOR.value, channels=_DISCRIMINATOR_CHANNELS.value
        ),
        step=config_lib.StepConfig(
            phase=phase,
            xla=xla,
            steps_per_loop=_STEPS_PER_LOOP.value,
            loss=config_lib.LossConfig(
                pixel_loss=_PIXEL_LOSS.value,
                content_weight=_CONTENT_WEIGHT.value,
                adversarial_weight=_ADVERSARIAL_WEIGHT.value,
                pixel_weight=_PIXEL_WEIGHT.value,
                perceptual_network=_PERCEPTUAL_NETWORK.value,
                perceptual_weights=_PERCEPTUAL_WEIGHTS.value,
                gan_loss=_GAN_LOSS.value,
                perceptual_layers=_PERCEPTUAL_LAYERS.value,
                perceptual_criterion=_PERCEPTUAL_CRITERION.value,
            ),
        ),
        input=_input_config(),
        degradation=config_lib.DegradationChoice(
            kind=_DEGRADATION.value,
            degrade_on=_DEGRADE_ON.value,
            usm_targets=_USM_TARGETS.value,
        ),
        optimizer=config_lib.OptimizerConfig(
            beta_1=_BETA_1.value,
            beta_2=_BETA_2.value,
            mixed_precision=_MIXED_PRECISION.value,
            ema_decay=_EMA_DECAY.value,
        ),
        schedule=_schedule(phase),
        reporting=config_lib.ReportingConfig(
            checkpoint_steps=_CHECKPOINT_STEPS.value,
            max_checkpoints=_MAX_CHECKPOINTS.value,
            log_steps=_LOG_STEPS.value,
            eval_steps=_EVAL_STEPS.value,
            image_steps=_IMAGE_STEPS.value,
        ),
        init_checkpoint=_INIT_CHECKPOINT.value,
        seed=_SEED.value,
        replay_input_on_resume=_REPLAY_INPUT_ON_RESUME.value,
    )


def resolve_perceptual_weights(config, strategy):
    """The GAN phase's config with its perceptual weights decided once, logged and recorded.

    The choice (a perceptual.WeightsChoice) replaces the flag's value, so building the content
    model neither downloads nor warns a second time; the chief writes it to
    MODEL_DIR/<phase>/perceptual_weights.json (demo.py reports it). Pretrain has no content loss.

    Raises:
      perceptual.PerceptualWeightsError: --perceptual_weights=imagenet unavailable, or no such
        file.
    """
    if config.phase != config_lib.GAN:
        return config
    from trainer import generator_store, perceptual  # noqa: PLC0415 (after the CPU split)

    loss = config.step.loss
    choice = perceptual.resolve_weights(loss.perceptual_network, loss.perceptual_weights)
    logging.info("Perceptual features (%s): %s", loss.perceptual_network, choice.summary)
    if strategy_lib.is_chief(strategy):
        phase_dir = generator_store.phase_dir(config.model_dir, config.phase)
        perceptual.write_record(phase_dir, choice)
    loss = dataclasses.replace(loss, perceptual_weights=choice)
    return dataclasses.replace(config, step=dataclasses.replace(config.step, loss=loss))


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"Unexpected arguments: {argv[1:]}")
    _check_degradation_flags()
    strategy_lib.split_cpu(_NUM_CPU_REPLICAS.value)
    # Imported after the CPU split: they initialise TensorFlow.
    from trainer import input_pipeline, loop, steps  # noqa: PLC0415

    try:
        source = input_pipeline.open_dataset(_DATA_DIR.value)  # the one manifest read
        strategy = strategy_lib.create_strategy(_STRATEGY.value)
        logging.info(
            "Strategy %s with %d replica(s).",
            type(strategy).__name__,
            strategy.num_replicas_in_sync,
        )
        config = _config(source.scale, steps.resolve_xla_mode(_xla_flag(), strategy))
        config = resolve_perceptual_weights(config, strategy)
        step, metrics = loop.train(config, source, strategy)
    except (loop.NonFiniteLossError, ValueError, FileNotFoundError) as e:
        # Bad flags or data, or a diverged run: one line, not a traceback.
        sys.exit(f"error: {e}")
    logging.info("Done: step %d, %s", step, metrics)


def run():
    """The console-script entry (srgan-train)."""
    flags.mark_flags_as_required(["data_dir", "model_dir"])
    app.run(main)


if __name__ == "__main__":
    run()
