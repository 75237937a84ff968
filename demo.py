"""`make demo`: the whole chain on the built-in sample photos, stage by stage.

sample photos -> Beam job (TFRecords) -> pretrain (SRResNet) -> GAN phase (SRGAN) -> evaluate vs
bicubic -> export a SavedModel version -> local TF-Serving-compatible server -> upscale one image
over REST and one over gRPC -> side-by-side PNG -> summary. Any failing stage stops the demo and is
named.
"""

import json
import os
import shutil
import subprocess
import sys
import time

import numpy as np
from absl import app, flags
from PIL import Image

_OUTPUT_DIR = flags.DEFINE_string("output_dir", "demo_out", "Where every stage writes.")
_FLAGFILE = flags.DEFINE_string(
    "train_flagfile", "configs/quickstart.flags", "Trainer flagfile for both phases."
)
_MODEL_NAME = flags.DEFINE_string("model_name", "srgan", "Served model name.")
_KEEP = flags.DEFINE_boolean(
    "keep", False, "Keep an existing --output_dir instead of starting over."
)

PY = sys.executable


class StageFailed(RuntimeError):
    pass


class Stages:
    """Runs named stages, prints headers, times them and names the one that fails."""

    def __init__(self):
        self.times = {}

    def run(self, name, fn):
        print(f"\n=== [{len(self.times) + 1}] {name} ===", flush=True)
        start = time.time()
        try:
            result = fn()
        except Exception as e:  # noqa: BLE001 - any failure is reported with its stage
            raise StageFailed(f"demo failed at stage '{name}': {e}") from e
        self.times[name] = time.time() - start
        print(f"--- {name}: done in {self.times[name]:.1f} s", flush=True)
        return result


def command(*args):
    """Runs a command, streaming its output; raises with the command line if it fails."""
    print("$ " + " ".join(args), flush=True)
    code = subprocess.call(list(args))
    if code:
        raise RuntimeError(f"command exited with status {code}: {' '.join(args)}")


class LocalServer:
    """The local TF-Serving-compatible server as a subprocess on free ports."""

    def __init__(self, model_base_path, model_name):
        self.process = subprocess.Popen(
            [
                PY,
                "-m",
                "serving.local_server",
                f"--model_base_path={model_base_path}",
                f"--model_name={model_name}",
                "--rest_port=0",
                "--grpc_port=0",
            ],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        self.rest, self.grpc = self._read_ports()

    def _read_ports(self, timeout=120):
        deadline = time.time() + timeout
        while time.time() < deadline:
            line = self.process.stdout.readline()
            if not line:
                raise RuntimeError("local server exited before it was ready")
            print("  server: " + line.rstrip(), flush=True)
            if line.startswith("serving REST on"):
                parts = line.split()
                return parts[3], parts[6]
        raise RuntimeError("local server was not ready in time")

    def stop(self):
        self.process.terminate()
        self.process.wait(timeout=30)


def pick_demo_image(photos_dir, scale=4, size=96):
    """A small LR input: the centre of the first sample photo, downscaled."""
    name = sorted(os.listdir(photos_dir))[0]
    image = Image.open(os.path.join(photos_dir, name)).convert("RGB")
    w, h = image.size
    side = min(w, h, size * scale)
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


def main(argv):
    del argv
    out = os.path.abspath(_OUTPUT_DIR.value)
    if os.path.exists(out) and not _KEEP.value:
        shutil.rmtree(out)
    os.makedirs(out, exist_ok=True)
    paths = {
        name: os.path.join(out, name)
        for name in ("photos", "data", "model", "export", "requests", "results")
    }
    stages = Stages()
    try:
        _run_chain(stages, paths)
    except StageFailed as e:
        print(f"\nFAILED: {e}", file=sys.stderr, flush=True)
        return 1
    return 0


def _run_chain(stages, paths):
    stages.run(
        "sample photos",
        lambda: command(PY, "-m", "data_prep.sample_images", f"--output_dir={paths['photos']}"),
    )
    stages.run(
        "Beam job -> TFRecords",
        lambda: command(
            PY,
            "-m",
            "data_prep.build_tfrecords",
            f"--hr_glob={paths['photos']}/*.png",
            f"--output_dir={paths['data']}",
            "--scale=4",
            "--val_fraction=0.25",
            "--direct_num_workers=2",
            "--direct_running_mode=multi_processing",
        ),
    )
    for phase in ("pretrain", "gan"):
        stages.run(
            f"train ({phase})",
            lambda phase=phase: command(
                PY,
                "-m",
                "trainer.train",
                f"--flagfile={_FLAGFILE.value}",
                f"--phase={phase}",
                f"--data_dir={paths['data']}",
                f"--model_dir={paths['model']}",
            ),
        )
    eval_json = os.path.join(paths["results"], "evaluation.json")
    os.makedirs(paths["results"], exist_ok=True)
    stages.run(
        "evaluate vs bicubic",
        lambda: command(
            PY,
            "-m",
            "trainer.evaluate",
            f"--data_dir={paths['data']}",
            "--split=validation",
            f"--checkpoint={paths['model']}",
            f"--output_json={eval_json}",
        ),
    )
    stages.run(
        "export SavedModel",
        lambda: command(
            PY,
            "-m",
            "serving.export",
            f"--model_dir={paths['model']}",
            f"--export_base={paths['export']}",
            f"--model_name={_MODEL_NAME.value}",
        ),
    )
    os.makedirs(paths["requests"], exist_ok=True)
    lr_path = os.path.join(paths["requests"], "lr.png")
    pick_demo_image(paths["photos"]).save(lr_path)
    server = stages.run(
        "start local server",
        lambda: LocalServer(os.path.join(paths["export"], _MODEL_NAME.value), _MODEL_NAME.value),
    )
    try:
        for protocol, address in (("rest", server.rest), ("grpc", server.grpc)):
            sr_path = os.path.join(paths["results"], f"sr_{protocol}.png")
            stages.run(
                f"upscale over {protocol.upper()}",
                lambda p=protocol, a=address, s=sr_path: command(
                    PY,
                    "-m",
                    "serving.client",
                    f"--server={a}",
                    f"--protocol={p}",
                    f"--model_name={_MODEL_NAME.value}",
                    f"--input={lr_path}",
                    f"--output={s}",
                ),
            )
    finally:
        stages.run("stop local server", server.stop)
    grid = os.path.join(paths["results"], "lr_bicubic_sr.png")
    stages.run(
        "side-by-side PNG",
        lambda: side_by_side(lr_path, os.path.join(paths["results"], "sr_rest.png"), grid),
    )
    _summary(stages, paths, eval_json, grid)


def _summary(stages, paths, eval_json, grid):
    with open(eval_json) as f:
        scores = json.load(f)
    print("\n=== summary ===")
    for name in ("photos", "data", "model", "export"):
        print(f"{name:>8}: {paths[name]}")
    print(f"    grid: {grid}")
    print(
        f"validation PSNR/SSIM (Y): model {scores['model']['psnr']:.2f} dB / "
        f"{scores['model']['ssim']:.4f}, bicubic {scores['bicubic']['psnr']:.2f} dB / "
        f"{scores['bicubic']['ssim']:.4f}"
    )
    for name, seconds in stages.times.items():
        print(f"  {seconds:7.1f} s  {name}")
    print(f"  {sum(stages.times.values()):7.1f} s  total")


if __name__ == "__main__":
    app.run(main)
