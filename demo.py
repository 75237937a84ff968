"""`make demo`: the whole chain on the built-in sample photos, one console line per stage.

sample photos -> Beam job (TFRecords) -> pretrain (SRResNet) -> GAN phase (SRGAN) -> evaluate vs
bicubic -> export a SavedModel version -> local TF-Serving-compatible server -> upscale one image
over REST and one over gRPC -> side-by-side PNG -> summary.

Every stage runs as `python -m <module>` (what its console script runs) with its stdout and stderr
in OUTPUT_DIR/logs/<stage>.log; the console shows the stage's name, time and key result. A failing
stage stops the demo, which names it and prints the tail of its log. `--verbose` (or
SRGAN_VERBOSE=1) streams every stage's full output, library chatter included.
"""

import contextlib
import json
import os
import shutil
import subprocess
import sys
import time

import numpy as np
from absl import app, flags
from PIL import Image

import srgan_cli
from data_prep import schema
from serving import server_process

_OUTPUT_DIR = flags.DEFINE_string("output_dir", "demo_out", "Where every stage writes.")
_FLAGFILE = flags.DEFINE_string(
    "train_flagfile", "configs/quickstart.flags", "Trainer flagfile for both phases."
)
_SCALE = flags.DEFINE_integer(
    "scale",
    4,
    f"Upscaling factor, one of {schema.SCALES}; the trainer's --hr_patch_size must be a "
    "multiple of it (configs/quickstart.flags: 64, for x2/x4/x8).",
)
_GAN = flags.DEFINE_boolean("gan", True, "Run the GAN phase after pretraining (--nogan: skip).")
_MODEL_NAME = flags.DEFINE_string("model_name", "srgan", "Served model name.")
_KEEP = flags.DEFINE_boolean(
    "keep", False, "Keep an existing --output_dir instead of starting over."
)
_VERBOSE = flags.DEFINE_boolean(
    "verbose", False, f"Stream every stage's full output (same as {srgan_cli.VERBOSE_ENV}=1)."
)
flags.register_validator(
    "scale", lambda scale: scale in schema.SCALES, f"--scale must be one of {schema.SCALES}"
)

PY = sys.executable
LOG_TAIL_LINES = 25


class StageFailed(RuntimeError):
    """A stage failed; the message names it, `stage` holds its name."""

    def __init__(self, stage, error):
        super().__init__(f"demo failed at stage '{stage}': {error}")
        self.stage = stage


class Stages:
    """Runs named stages: one console line each (time, key result), output in LOG_DIR/<name>.log."""

    def __init__(self, log_dir, total, verbose):
        self.log_dir = log_dir
        self.total = total
        self.verbose = verbose
        self.times = {}

    def log_path(self, name):
        return os.path.join(self.log_dir, f"{name}.log")

    def call(self, name, fn, describe=lambda result: ""):
        """Runs `fn()` as stage `name`; returns its result, prints `describe(result)`.

        Raises:
          StageFailed: naming the stage, when `fn` raises.
        """
        start = time.time()
        try:
            result = fn()
            summary = describe(result)  # reads the stage's output: a missing one fails the stage.
        except Exception as e:  # noqa: BLE001 - any failure is reported with its stage
            raise StageFailed(name, e) from e
        self.times[name] = time.time() - start
        number = f"[{len(self.times)}/{self.total}]"
        print(f"{number:>7} {name:<14} {self.times[name]:6.1f} s  {summary}", flush=True)
        return result

    def module(self, name, module, *args, describe=lambda result: ""):
        """Runs `python -m module args...` as stage `name`, its output in the stage's log."""
        command = [PY, "-m", module, *args]
        return self.call(
            name, lambda: run_logged(command, self.log_path(name), self.verbose), describe
        )


def run_logged(command, log_path, verbose):
    """Runs `command` with stdout and stderr in `log_path` (and on the console when `verbose`).

    Raises:
      RuntimeError: the command exited with a non-zero status.
    """
    line = " ".join(command)
    with open(log_path, "w") as log:
        log.write(f"$ {line}\n")
        log.flush()
        if verbose:
            print(f"$ {line}", flush=True)
            code = _tee(command, log)
        else:
            code = subprocess.call(
                command, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT
            )
    if code:
        raise RuntimeError(f"command exited with status {code}: {line}")


def _tee(command, log):
    """Streams the command's output to the console and the log; returns its exit status."""
    with subprocess.Popen(
        command,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    ) as process:
        for line in process.stdout:
            sys.stdout.write(line)
            log.write(line)
        sys.stdout.flush()
    return process.returncode


def log_tail(path, num_lines=LOG_TAIL_LINES):
    """The last `num_lines` lines of a stage's log."""
    with open(path, errors="replace") as f:
        return "".join(f.readlines()[-num_lines:])


def pick_demo_image(photos_dir, scale, size=96):
    """A small LR input: the centre of the first sample photo, downscaled by `scale`."""
    name = sorted(os.listdir(photos_dir))[0]
    image = Image.open(os.path.join(photos_dir, name)).convert("RGB")
    w, h = image.size
    side = min(w, h, size * scale) // scale * scale
    left, top = (w - side) // 2, (h - side) // 2
    hr = image.crop((left, top, left + side, top + side))
    return hr.resize((side // scale, side // scale), Image.BICUBIC)


def side_by_side(lr_path, sr_path, out_path):
    """LR (nearest) | bicubic | SR, all at the SR size."""
    lr = Image.open(lr_path).convert("RGB")
    sr = Image.open(sr_path).convert("RGB")
    panels = [lr.resize(sr.size, Image.NEAREST), lr.resize(sr.size, Image.BICUBIC), sr]
    canvas = np.concatenate([np.asarray(p) for p in panels], axis=1)
    Image.fromarray(canvas).save(out_path)
    return out_path


def describe_photos(photos_dir):
    return f"{len(os.listdir(photos_dir))} photos in {photos_dir}"


def describe_dataset(data_dir):
    with open(schema.manifest_path(data_dir)) as f:
        manifest = schema.Manifest.from_json(f.read())
    counts = ", ".join(f"{info.num_examples} {name}" for name, info in manifest.splits.items())
    return f"x{manifest.scale}: {counts} pairs, {manifest.num_rejected} rejected"


def describe_checkpoint(phase_dir):
    """The newest checkpoint prefix, from the `checkpoint` index file tf.train writes."""
    with open(os.path.join(phase_dir, "checkpoint")) as f:
        newest = f.readline().split(":", 1)[1].strip().strip('"')
    return f"checkpoint {os.path.join(phase_dir, newest)}"


# trainer.perceptual.RECORD_FILENAME (not imported: the demo itself does not load TensorFlow).
PERCEPTUAL_RECORD = "perceptual_weights.json"


def perceptual_features(phase_dir):
    """What the GAN phase's content loss ran on, as the trainer recorded it in `phase_dir`.

    E.g. "ImageNet (cached file ~/.keras/models/...)" or "random (no ImageNet weights: ...)".
    """
    with open(os.path.join(phase_dir, PERCEPTUAL_RECORD)) as f:
        return json.load(f)["summary"]


def describe_gan(phase_dir):
    features = perceptual_features(phase_dir).split(" (", 1)[0]
    return f"{describe_checkpoint(phase_dir)}; perceptual features: {features}"


def describe_scores(eval_json):
    with open(eval_json) as f:
        scores = json.load(f)
    return (
        f"PSNR {scores['model']['psnr']:.2f} dB (bicubic {scores['bicubic']['psnr']:.2f} dB) "
        f"on {len(scores['images'])} validation images"
    )


def describe_export(model_base_path):
    versions = sorted((v for v in os.listdir(model_base_path) if v.isdigit()), key=int)
    return f"version {os.path.join(model_base_path, versions[-1])}"


def describe_upscale(lr_path, sr_path):
    lr, sr = Image.open(lr_path), Image.open(sr_path)
    return f"{lr.width}x{lr.height} -> {sr.width}x{sr.height} in {sr_path}"


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {' '.join(argv[1:])}")
    if _VERBOSE.value:
        os.environ[srgan_cli.VERBOSE_ENV] = "1"
    srgan_cli.quiet_console()  # its environment variables reach every stage's subprocess.
    out = os.path.abspath(_OUTPUT_DIR.value)
    if os.path.exists(out) and not _KEEP.value:
        shutil.rmtree(out)
    names = ("photos", "data", "model", "export", "requests", "results", "logs")
    paths = {name: os.path.join(out, name) for name in names}
    for name in ("requests", "results", "logs"):
        os.makedirs(paths[name], exist_ok=True)
    phases = ("pretrain", "gan") if _GAN.value else ("pretrain",)
    print(
        f"demo: x{_SCALE.value}, phases {' + '.join(phases)}, output in {out}; each stage's "
        f"output in {paths['logs']} ({srgan_cli.VERBOSE_ENV}=1 or --verbose to see it all)",
        flush=True,
    )
    stages = Stages(paths["logs"], total=8 + len(phases), verbose=srgan_cli.verbose())
    try:
        eval_json, grid = _run_chain(stages, paths, phases)
    except StageFailed as e:
        _report_failure(stages, e)
        return 1
    _summary(stages, paths, eval_json, grid)
    return 0


def _report_failure(stages, error):
    """Names the failed stage and shows the tail of its log (and where the whole log is)."""
    print(f"\nFAILED: {error}", file=sys.stderr, flush=True)
    path = stages.log_path(error.stage)
    if not os.path.exists(path):
        return
    if not stages.verbose:  # verbose: the log was just streamed.
        print(f"--- last lines of {path} ---\n{log_tail(path).rstrip()}", file=sys.stderr)
    print(f"--- full log: {path}", file=sys.stderr, flush=True)


def _run_chain(stages, paths, phases):
    """Runs every stage; returns (evaluation JSON path, side-by-side PNG path)."""
    _prepare(stages, paths)
    for phase in phases:
        stages.module(
            f"train-{phase}",
            "trainer.train",
            f"--flagfile={_FLAGFILE.value}",
            f"--phase={phase}",
            f"--data_dir={paths['data']}",
            f"--model_dir={paths['model']}",
            describe=lambda _, phase=phase: (
                describe_gan if phase == "gan" else describe_checkpoint
            )(os.path.join(paths["model"], phase)),
        )
    eval_json = os.path.join(paths["results"], "evaluation.json")
    stages.module(
        "evaluate",
        "trainer.evaluate",
        f"--data_dir={paths['data']}",
        "--split=validation",
        f"--checkpoint={paths['model']}",
        f"--output_json={eval_json}",
        describe=lambda _: describe_scores(eval_json),
    )
    model_base_path = os.path.join(paths["export"], _MODEL_NAME.value)
    stages.module(
        "export",
        "serving.export",
        f"--model_dir={paths['model']}",
        f"--export_base={paths['export']}",
        f"--model_name={_MODEL_NAME.value}",
        describe=lambda _: describe_export(model_base_path),
    )
    lr_path = os.path.join(paths["requests"], "lr.png")
    pick_demo_image(paths["photos"], _SCALE.value).save(lr_path)
    _serve_and_upscale(stages, paths, model_base_path, lr_path)
    grid = stages.call(
        "side-by-side",
        lambda: side_by_side(
            lr_path,
            os.path.join(paths["results"], "sr_rest.png"),
            os.path.join(paths["results"], "lr_bicubic_sr.png"),
        ),
        describe=lambda grid: f"LR | bicubic | SR in {grid}",
    )
    return eval_json, grid


def _prepare(stages, paths):
    stages.module(
        "samples",
        "data_prep.sample_images",
        f"--output_dir={paths['photos']}",
        describe=lambda _: describe_photos(paths["photos"]),
    )
    stages.module(
        "prepare",
        "data_prep.build_tfrecords",
        f"--hr_glob={paths['photos']}/*.png",
        f"--output_dir={paths['data']}",
        f"--scale={_SCALE.value}",
        "--val_fraction=0.25",
        "--direct_num_workers=2",
        "--direct_running_mode=multi_processing",
        describe=lambda _: describe_dataset(paths["data"]),
    )


@contextlib.contextmanager
def stderr_to(path):
    """Points this process's stderr (fd 2) at `path` inside the block.

    A subprocess started inside inherits it for its whole life: the local server's warnings go to
    its log like every other stage's output.
    """
    sys.stderr.flush()
    saved = os.dup(2)
    with open(path, "a") as log:
        os.dup2(log.fileno(), 2)
    try:
        yield
    finally:
        sys.stderr.flush()
        os.dup2(saved, 2)
        os.close(saved)


def start_server(stack, model_base_path, log_path, verbose):
    """Starts the local server for `stack`; its stderr goes to `log_path` unless verbose."""
    with contextlib.nullcontext() if verbose else stderr_to(log_path):
        return stack.enter_context(
            server_process.start(model_base_path, _MODEL_NAME.value, host="127.0.0.1")
        )


def _serve_and_upscale(stages, paths, model_base_path, lr_path):
    """Starts the local server, upscales `lr_path` over REST and over gRPC, stops the server."""
    with contextlib.ExitStack() as stack:
        server = stages.call(
            "serve",
            lambda: start_server(stack, model_base_path, stages.log_path("serve"), stages.verbose),
            describe=lambda s: f"REST {s.rest_address}, gRPC {s.grpc_address}",
        )
        for protocol, address in (("rest", server.rest_address), ("grpc", server.grpc_address)):
            sr_path = os.path.join(paths["results"], f"sr_{protocol}.png")
            stages.module(
                f"upscale-{protocol}",
                "serving.client",
                f"--server={address}",
                f"--protocol={protocol}",
                f"--model_name={_MODEL_NAME.value}",
                f"--input={lr_path}",
                f"--output={sr_path}",
                describe=lambda _, sr_path=sr_path: describe_upscale(lr_path, sr_path),
            )


def _summary(stages, paths, eval_json, grid):
    with open(eval_json) as f:
        scores = json.load(f)
    print("\n=== summary ===")
    for name in ("photos", "data", "model", "export", "logs"):
        print(f"{name:>8}: {paths[name]}")
    print(f"    grid: {grid}")
    print(
        f"validation PSNR/SSIM (Y): model {scores['model']['psnr']:.2f} dB / "
        f"{scores['model']['ssim']:.4f}, bicubic {scores['bicubic']['psnr']:.2f} dB / "
        f"{scores['bicubic']['ssim']:.4f}"
    )
    if _GAN.value:
        print(f"perceptual features: {perceptual_features(os.path.join(paths['model'], 'gan'))}")
    else:
        print("perceptual features: not used (--nogan: no GAN phase)")
    for name, seconds in stages.times.items():
        print(f"  {seconds:7.1f} s  {name}")
    print(f"  {sum(stages.times.values()):7.1f} s  total")


def run():
    app.run(main)


if __name__ == "__main__":
    run()
