"""A training run's configuration: one tree of frozen dataclasses, each field validated here.

  RunConfig
    generator  GeneratorConfig   what generator.json records (scale from the dataset's manifest)
    discriminator DiscriminatorConfig  the GAN phase's discriminator
    input      InputConfig       the training stream (patch size, global batch, crops, shuffle)
    degradation DegradationChoice how LR is made: stored LR, or Real-ESRGAN's on-the-fly pipeline
    step       StepConfig        what one step does (phase, losses, XLA mode, steps per call)
      loss     LossConfig
    optimizer  OptimizerConfig   Adam and mixed precision
    schedule   ScheduleConfig    total steps and the piecewise-constant learning rates
    reporting  ReportingConfig   checkpoint, log, validation and image intervals

trainer/train.py builds the tree from its flags; library code takes the parts it needs. Phase
names and XLA modes are declared here and nowhere else. Plain Python: importing this module
does not import TensorFlow.
"""

import dataclasses

from data_prep import schema

PRETRAIN = "pretrain"
GAN = "gan"
PHASES = (PRETRAIN, GAN)

# What the step compiles with (see trainer.steps); XLA_DEFAULT is resolved against the strategy
# (steps.resolve_xla_mode) before a StepConfig is made, so a StepConfig holds a real mode.
XLA_MODES = ("off", "step", "auto")
XLA_DEFAULT = "default"
# A resolved mode, never a flag: what "step" becomes with several replicas when every model of
# the phase is eligible (XLA_REPLICA_GRADIENT_MODELS): each replica's forward, losses and
# gradients compiled, the gradient all-reduce and the optimizer updates outside XLA.
XLA_REPLICA_GRADIENTS = "replica_gradients"
RESOLVED_XLA_MODES = (*XLA_MODES, XLA_REPLICA_GRADIENTS)

PIXEL_LOSSES = ("mse", "l1")

# Generators (trainer.models): srresnet (SRGAN), rrdb (ESRGAN's RRDBNet), compact (Real-ESRGAN's
# SRVGGNetCompact). Their reference sizes fill a GeneratorConfig's size fields left at None.
SRRESNET = "srresnet"
RRDB = "rrdb"
COMPACT = "compact"
GENERATORS = (SRRESNET, RRDB, COMPACT)
GENERATOR_REFERENCE_SIZES = {
    SRRESNET: {"num_blocks": 16, "channels": 64, "growth": None},
    RRDB: {"num_blocks": 23, "channels": 64, "growth": 32},
    COMPACT: {"num_blocks": 16, "channels": 64, "growth": None},
}

# Discriminators: vgg (SRGAN's, one logit per image), unet (Real-ESRGAN's UNetDiscriminatorSN,
# one logit per pixel).
DISCRIMINATORS = ("vgg", "unet")

# How the training LR is made (trainer.degrade_batches): "none" reads the stored LR of paired
# datasets; "realesrgan" synthesises it from HR patches with Real-ESRGAN's second-order
# degradation (trainer.degradations), on each replica's device inside the step or in tf.data.
DEGRADATIONS = ("none", "realesrgan")
DEGRADE_ON = ("device", "input")

# Adversarial losses (trainer.losses): bce (SRGAN), ragan (ESRGAN's relativistic average GAN).
GAN_LOSSES = ("bce", "ragan")

# The models whose training forward pass needs no cross-replica synchronisation, so that each
# replica's forward, losses and gradients can be one XLA cluster (XLA_REPLICA_GRADIENTS):
# rrdb and compact have no BatchNormalization (srresnet and the vgg discriminator have
# synchronised BN, whose statistics all-reduce needs merge_call). The unet discriminator has no
# BN and writes its spectral-norm iterate `sn_u` to an on-read (replica-local) variable, which
# needs no merge_call. The ragan loss all-reduces its global means (merge_call under
# the host reduction used on CPU), so a GAN phase with ragan is not eligible either.
XLA_REPLICA_GRADIENT_GENERATORS = (RRDB, COMPACT)
XLA_REPLICA_GRADIENT_DISCRIMINATORS = ("unet",)
XLA_REPLICA_GRADIENT_GAN_LOSSES = ("bce",)


def replica_gradients_blocker(phase, generator, discriminator=None, gan_loss=None):
    """Why a phase cannot compile its per-replica gradients with XLA, or None when it can.

    Args:
      phase: PRETRAIN or GAN.
      generator: one of GENERATORS.
      discriminator: one of DISCRIMINATORS (GAN only).
      gan_loss: one of GAN_LOSSES (GAN only).
    """
    if generator not in XLA_REPLICA_GRADIENT_GENERATORS:
        return f"the {generator} generator has synchronised BatchNorm"
    if phase != GAN:
        return None
    if discriminator not in XLA_REPLICA_GRADIENT_DISCRIMINATORS:
        return f"the {discriminator} discriminator has synchronised BatchNorm"
    if gan_loss not in XLA_REPLICA_GRADIENT_GAN_LOSSES:
        return f"the {gan_loss} loss all-reduces inside the loss"
    return None


def resolve_xla(requested, *, gpu, num_replicas, cpu_default, models=None):
    """The XLA mode a step runs with, and why (the one place modes are resolved).

    Args:
      requested: one of XLA_MODES or XLA_DEFAULT (the --xla flag), or an already resolved mode.
      gpu: the strategy's devices are GPUs.
      num_replicas: replicas in sync.
      cpu_default: the mode "default" means on CPU (measured: trainer.steps.CPU_DEFAULT_XLA).
      models: (phase, generator, discriminator, gan_loss) names, or None when the models are
        not known yet: several replicas then keep "step" unresolved (RunConfig-level callers
        resolve it again with the models).

    Returns:
      (mode, reason): mode is one of RESOLVED_XLA_MODES.
    """
    choices = (*RESOLVED_XLA_MODES, XLA_DEFAULT)
    if requested not in choices:
        raise ValueError(f"xla must be one of {choices}, got {requested!r}.")
    if requested == XLA_DEFAULT:
        if not gpu:
            return cpu_default, "the measured CPU default"
        requested = "step"
    if requested not in ("step", XLA_REPLICA_GRADIENTS) or num_replicas == 1:
        if requested == XLA_REPLICA_GRADIENTS:
            return "step", "one replica compiles its whole step"
        return requested, "as requested"
    if models is None:
        return requested, "several replicas: resolved against the models when they are known"
    blocker = replica_gradients_blocker(*models)
    if blocker is not None:
        return "auto", f"{blocker}: the replica step cannot be one XLA cluster"
    return XLA_REPLICA_GRADIENTS, (
        "BN-free models: each replica's forward, losses and gradients compiled; the gradient "
        "all-reduce and the optimizer updates outside XLA"
    )


def _positive(owner, **values):
    for name, value in values.items():
        if value is None or value < 1:
            raise ValueError(f"{owner}.{name} must be >= 1, got {value}.")


def _choice(owner, name, value, choices):
    if value not in choices:
        raise ValueError(f"{owner}.{name} must be one of {choices}, got {value!r}.")


@dataclasses.dataclass(frozen=True)
class GeneratorConfig:
    """The generator builder arguments (MODEL_DIR/generator.json; the export records them too).

    A generator.json written before `architecture` existed loads as srresnet (the field's
    default), with the sizes it recorded.

    Attributes:
      scale: upscale factor, one of data_prep.schema.SCALES (from the dataset's manifest).
      num_blocks: srresnet residual blocks (16), rrdb RRDBs (23), compact body convs (16);
        None: the architecture's reference size.
      channels: feature channels (64 for all three); None: the reference size.
      bicubic_skip: the generator adds the bicubic upscale of its input (learns the residual;
        compact replaces its nearest-neighbour base with it).
      architecture: one of GENERATORS.
      growth: rrdb's dense-block growth channels (32); None: the reference (rrdb) or not
        applicable (a value for another architecture is an error).
    """

    scale: int
    num_blocks: int | None = None
    channels: int | None = None
    bicubic_skip: bool = False
    architecture: str = SRRESNET
    growth: int | None = None

    def __post_init__(self):
        _choice("GeneratorConfig", "scale", self.scale, schema.SCALES)
        _choice("GeneratorConfig", "architecture", self.architecture, GENERATORS)
        reference = GENERATOR_REFERENCE_SIZES[self.architecture]
        if reference["growth"] is None and self.growth is not None:
            raise ValueError(
                f"GeneratorConfig.growth applies to the rrdb generator only; the "
                f"{self.architecture} generator got growth={self.growth}."
            )
        for name, value in reference.items():
            if getattr(self, name) is None:
                object.__setattr__(self, name, value)
        _positive("GeneratorConfig", num_blocks=self.num_blocks, channels=self.channels)
        if reference["growth"] is not None:
            _positive("GeneratorConfig", growth=self.growth)


@dataclasses.dataclass(frozen=True)
class DiscriminatorConfig:
    """The GAN phase's discriminator (trainer.models; not part of generator.json).

    Attributes:
      architecture: "vgg" (SRGAN's, fixed input size, one logit per image) or "unet"
        (Real-ESRGAN's UNetDiscriminatorSN, any size, one logit per pixel).
      channels: the first conv's features (64 for both).
    """

    architecture: str = "vgg"
    channels: int = 64

    def __post_init__(self):
        _choice("DiscriminatorConfig", "architecture", self.architecture, DISCRIMINATORS)
        _positive("DiscriminatorConfig", channels=self.channels)


@dataclasses.dataclass(frozen=True)
class InputConfig:
    """The training stream (trainer.input_pipeline.make_train_dataset).

    Attributes:
      hr_patch_size: HR patch side; the LR patch side is hr_patch_size // scale.
      global_batch_size: pairs per step over all replicas (the step averages its losses over
        the batch it receives, so this is the one place the batch size is set and checked).
      crops_per_image: random patches taken from each decoded image.
      shuffle_buffer: patch pairs in the shuffle buffer (uint8, ~29 KB each at HR 96).
      skip_corrupt: skip records that do not decode (each one logged and counted) instead of
        failing with an error that names the shard.
      split: the manifest split to read.
      cache_decoded_images: decode each image once and keep it in memory (uint8 LR + HR,
        about (1 + scale^2) * 3 bytes per LR pixel: ~125 MB for 50 1024x768 x4 pairs). Removes
        PNG decoding after the first epoch; only for splits that fit in host RAM.
    """

    hr_patch_size: int = 96
    global_batch_size: int = 16
    crops_per_image: int = 16
    shuffle_buffer: int = 1024
    skip_corrupt: bool = False
    split: str = schema.TRAIN
    cache_decoded_images: bool = False

    def __post_init__(self):
        _positive(
            "InputConfig",
            hr_patch_size=self.hr_patch_size,
            global_batch_size=self.global_batch_size,
            crops_per_image=self.crops_per_image,
            shuffle_buffer=self.shuffle_buffer,
        )


@dataclasses.dataclass(frozen=True)
class DegradationChoice:
    """How the training LR is made (the parameters of the pipeline: trainer.degradations).

    Attributes:
      kind: one of DEGRADATIONS.
      degrade_on: "device" (each replica degrades its HR batch at the start of the step, as
        Real-ESRGAN does on the GPU) or "input" (the tf.data pipeline does, on the host);
        both draw the same degradations for the same (seed, step, replica).
      usm_targets: the pixel and perceptual losses compare with an unsharp-masked HR
        (Real-ESRGAN's l1_gt_usm / percep_gt_usm); the discriminator still sees the plain HR
        (gan_gt_usm: False). Applies to stored pairs too, as in Real-ESRGAN's paired
        fine-tuning.
    """

    kind: str = "none"
    degrade_on: str = "device"
    usm_targets: bool = False

    def __post_init__(self):
        _choice("DegradationChoice", "kind", self.kind, DEGRADATIONS)
        _choice("DegradationChoice", "degrade_on", self.degrade_on, DEGRADE_ON)

    @property
    def enabled(self):
        return self.kind != "none"

    @property
    def prepares_batches(self):
        """The step (or the input pipeline) changes the stored batches before the losses."""
        return self.enabled or self.usm_targets


def parse_layer_weights(text):
    """ "conv1_2:0.1,conv5_4:1" -> (("conv1_2", 0.1), ("conv5_4", 1.0)); a bare name weighs 1."""
    pairs = []
    for item in (part.strip() for part in text.split(",")):
        if not item:
            continue
        name, _, weight = item.partition(":")
        try:
            pairs.append((name.strip(), float(weight) if weight else 1.0))
        except ValueError:
            raise ValueError(f"perceptual layer {item!r}: the weight is not a number.") from None
    return tuple(pairs)


@dataclasses.dataclass(frozen=True)
class LossConfig:
    """Loss choices and weights (the SRGAN paper's defaults).

    Attributes:
      pixel_loss: "mse" or "l1": the pretrain (SRResNet) loss, and the GAN phase's pixel term.
      content_weight: weight of the perceptual (feature) loss in the GAN phase.
      adversarial_weight: weight of the generator's adversarial loss (1e-3 in the paper).
      pixel_weight: weight of the pixel loss in the GAN phase (0 in the paper).
      perceptual_network: the content-loss feature network (trainer.perceptual.NETWORKS).
      perceptual_weights: "auto" (ImageNet when cached or downloadable, else random with one
        warning), "imagenet" (strict), "none" (random: tests only) or a no-top weights file;
        train.py replaces it by the resolved perceptual.WeightsChoice.
      gan_loss: "bce" (SRGAN) or "ragan" (ESRGAN's relativistic average GAN).
      perceptual_layers: vgg19 only: ((layer, weight), ...) of VGG19 convs taken BEFORE their
        ReLU (names conv<block>_<conv> as in BasicSR); None: the network's reference
        (vgg19: conv5_4 weight 1, the ESRGAN paper). A string "conv1_2:0.1,..." is parsed.
      perceptual_criterion: "mse" or "l1" distance of the features; None: the network's
        reference (mse for vgg54 / resnet152v2 as in SRGAN, l1 for vgg19 as in ESRGAN).
    """

    pixel_loss: str = "mse"
    content_weight: float = 1.0
    adversarial_weight: float = 1e-3
    pixel_weight: float = 0.0
    perceptual_network: str = "vgg54"
    perceptual_weights: str = "auto"
    gan_loss: str = "bce"
    perceptual_layers: tuple | str | None = None
    perceptual_criterion: str | None = None

    def __post_init__(self):
        _choice("LossConfig", "pixel_loss", self.pixel_loss, PIXEL_LOSSES)
        _choice("LossConfig", "gan_loss", self.gan_loss, GAN_LOSSES)
        for name in ("content_weight", "adversarial_weight", "pixel_weight"):
            if getattr(self, name) < 0:
                raise ValueError(f"LossConfig.{name} must be >= 0, got {getattr(self, name)}.")
        from trainer import perceptual  # noqa: PLC0415 (keras: only once a config is made)

        _choice(
            "LossConfig", "perceptual_network", self.perceptual_network, tuple(perceptual.NETWORKS)
        )
        spec = perceptual.NETWORKS[self.perceptual_network]
        if self.perceptual_criterion is None:
            object.__setattr__(self, "perceptual_criterion", spec.criterion)
        _choice("LossConfig", "perceptual_criterion", self.perceptual_criterion, PIXEL_LOSSES)
        layers = self.perceptual_layers
        if isinstance(layers, str):
            layers = parse_layer_weights(layers)
        if layers is None:
            layers = spec.default_layers
        elif not spec.default_layers and tuple(layers):  # () is what a fixed-layer net stores
            raise ValueError(
                f"LossConfig.perceptual_layers applies to the vgg19 network only; "
                f"{self.perceptual_network} has one fixed layer."
            )
        layers = tuple((str(name), float(weight)) for name, weight in layers)
        perceptual.check_layers(self.perceptual_network, layers)
        object.__setattr__(self, "perceptual_layers", layers)


@dataclasses.dataclass(frozen=True)
class StepConfig:
    """What one training step does (trainer.steps.build_train_loop_fn).

    Attributes:
      phase: PRETRAIN (generator, pixel loss) or GAN (discriminator then generator update).
      xla: the resolved XLA mode, one of RESOLVED_XLA_MODES (steps.resolve_xla_mode picks it;
        "step" with several replicas is resolved again against the models by the loop).
      steps_per_loop: steps run by one call of the train loop function.
      loss: loss choices and weights.
    """

    phase: str
    xla: str = "off"
    steps_per_loop: int = 1
    loss: LossConfig = dataclasses.field(default_factory=LossConfig)

    def __post_init__(self):
        _choice("StepConfig", "phase", self.phase, PHASES)
        _choice("StepConfig", "xla", self.xla, RESOLVED_XLA_MODES)
        _positive("StepConfig", steps_per_loop=self.steps_per_loop)


@dataclasses.dataclass(frozen=True)
class OptimizerConfig:
    """Adam for every model of the phase; mixed_float16 models with dynamic loss scaling.

    Attributes:
      ema_decay: after every step the generator's exponential moving average moves to
        decay * ema + (1 - decay) * weights (ESRGAN / BasicSR: 0.999); 0 turns it off.
    """

    beta_1: float = 0.9
    beta_2: float = 0.999
    mixed_precision: bool = False
    ema_decay: float = 0.0

    def __post_init__(self):
        if not 0.0 <= self.ema_decay < 1.0:
            raise ValueError(f"OptimizerConfig.ema_decay must be in [0, 1), got {self.ema_decay}.")
        for name in ("beta_1", "beta_2"):
            if not 0.0 <= getattr(self, name) < 1.0:
                raise ValueError(
                    f"OptimizerConfig.{name} must be in [0, 1), got {getattr(self, name)}."
                )


@dataclasses.dataclass(frozen=True)
class ScheduleConfig:
    """How long the phase runs and its piecewise-constant learning rate.

    Attributes:
      train_steps: total steps of the phase (a resumed run continues to this total).
      learning_rates: one more value than lr_boundaries.
      lr_boundaries: increasing positive steps at which the next learning rate starts.
    """

    train_steps: int = 1000
    learning_rates: tuple = (1e-4,)
    lr_boundaries: tuple = ()

    def __post_init__(self):
        _positive("ScheduleConfig", train_steps=self.train_steps)
        object.__setattr__(self, "learning_rates", tuple(float(v) for v in self.learning_rates))
        object.__setattr__(self, "lr_boundaries", tuple(int(b) for b in self.lr_boundaries))
        values, boundaries = self.learning_rates, self.lr_boundaries
        if len(values) != len(boundaries) + 1:
            raise ValueError(
                f"{len(values)} learning rates need {len(values) - 1} boundaries, got "
                f"{len(boundaries)} ({list(boundaries)})."
            )
        if any(b2 <= b1 for b1, b2 in zip(boundaries, boundaries[1:], strict=False)) or (
            boundaries and boundaries[0] <= 0
        ):
            raise ValueError(
                f"Learning-rate boundaries must be positive and increasing: {list(boundaries)}."
            )


@dataclasses.dataclass(frozen=True)
class ReportingConfig:
    """Intervals in steps; 0 turns validation or image grids off."""

    checkpoint_steps: int = 1000
    max_checkpoints: int = 5
    log_steps: int = 100
    eval_steps: int = 0
    image_steps: int = 0
    num_grid_images: int = 4

    def __post_init__(self):
        _positive(
            "ReportingConfig",
            checkpoint_steps=self.checkpoint_steps,
            max_checkpoints=self.max_checkpoints,
            log_steps=self.log_steps,
            num_grid_images=self.num_grid_images,
        )
        for name in ("eval_steps", "image_steps"):
            if getattr(self, name) < 0:
                raise ValueError(f"ReportingConfig.{name} must be >= 0, got {getattr(self, name)}.")


@dataclasses.dataclass(frozen=True)
class RunConfig:
    """One phase of training. Step counts are totals for the phase (a resumed run continues).

    Attributes:
      model_dir: checkpoints (MODEL_DIR/<phase>/), summaries, images and generator.json.
      generator: the generator to build.
      discriminator: the GAN phase's discriminator.
      degradation: how the training LR is made.
      step: the step (its phase is the run's phase).
      input: the training stream.
      optimizer: Adam and mixed precision.
      schedule: total steps and learning rates.
      reporting: checkpoint / log / validation / image intervals.
      init_checkpoint: a checkpoint prefix whose generator starts a phase that has no checkpoint
        of its own (GAN default: the pretrain phase's latest).
      seed: seeds the weights and the input stream (None: non-deterministic, fastest).
      replay_input_on_resume: with a seed, a resumed run skips the batches already consumed
        and continues the uninterrupted run's exact stream (trainer.train_input).
    """

    model_dir: str
    generator: GeneratorConfig
    step: StepConfig
    input: InputConfig = InputConfig()
    optimizer: OptimizerConfig = OptimizerConfig()
    schedule: ScheduleConfig = ScheduleConfig()
    reporting: ReportingConfig = ReportingConfig()
    discriminator: DiscriminatorConfig = DiscriminatorConfig()
    degradation: DegradationChoice = DegradationChoice()
    init_checkpoint: str | None = None
    seed: int | None = None
    replay_input_on_resume: bool = False

    def __post_init__(self):
        if not self.model_dir:
            raise ValueError("RunConfig.model_dir is required.")

    @property
    def phase(self):
        return self.step.phase
