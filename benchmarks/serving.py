r"""Serving benchmark: latency and images/s in-process vs REST vs gRPC; the tiled path's memory.

  python -m benchmarks.serving                       # paper generator (16 blocks, 64 channels)
  python -m benchmarks.serving --num_blocks=2 --channels=16 --requests=8   # quick
  python -m benchmarks.serving --parts=load --load_seconds=60 --load_clients=8   # sustained load
  python -m benchmarks.serving --parts=generators --rounds=5   # the generators side by side
  python -m benchmarks.serving --parts=precision --rounds=3    # float32 / bfloat16 / float16

Random weights (speed does not depend on them). Part 1: a 128x128 PNG through serving_default
(-> 512x512 PNG), 1 and 8 concurrent clients, in-process SavedModel call vs the local server
(a subprocess) over REST and gRPC. Part 2: each of untiled/tiled exports is loaded in a fresh
subprocess that upscales one image through the uint8 signature; its peak RSS (ru_maxrss) and
time are reported, and the tiled output is compared with the untiled one. Part 3 (load): N clients
per protocol send the PNG back to back for S seconds to one server subprocess; errors, p50/p95 and
the server's RSS before/after (and its peak, VmHWM) are reported. Part 4 (generators): each of
--generators at its reference size is exported with the tiling an export gives it by default and
called in process through serving_default, together with its bare Keras network (float in, float
out, no PNG, uint8 or tiling), all in alternation; p50 latency and the achieved GFLOP/s of the
convolutions (multiply-adds counted from the layers, benchmarks.common.conv_macs_per_lr_pixel,
x2) are reported. Part 5 (precision): each of --generators at its reference size, exported at
each of --precisions (serving.export_lib.with_precision), through serving_default and as the cast
network alone, all in alternation; p50 latency, the speed-up over the first precision and GFLOP/s.
"""

import concurrent.futures
import functools
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time

import numpy as np
from absl import app, flags

from benchmarks import common
from serving import client_lib, contract, export_lib, server_process
from serving.serving_module import TilingConfig
from trainer import config as trainer_config
from trainer import generator_store

_NUM_BLOCKS = flags.DEFINE_integer("num_blocks", 16, "Generator residual blocks.")
_CHANNELS = flags.DEFINE_integer("channels", 64, "Generator channels.")
_SIZE = flags.DEFINE_integer("size", 128, "LR side for the latency benchmark.")
_REQUESTS = flags.DEFINE_integer("requests", 16, "Timed requests per (path, concurrency).")
_CONCURRENCY = flags.DEFINE_list("concurrency", ["1", "8"], "Concurrent clients.")
_TILED_SIZES = flags.DEFINE_list("tiled_sizes", ["512", "1024"], "LR sides for the tiled run.")
_UNTILED_MAX = flags.DEFINE_integer(
    "untiled_max", 512, "Largest side also run untiled (memory grows fast)."
)
_PARTS = flags.DEFINE_multi_enum(
    "parts",
    ["latency", "memory", "load"],
    ["latency", "memory", "load", "generators", "precision"],
    "What to run (generators: the architectures side by side; precision: each architecture's "
    "export at each --precisions side by side; both only when asked).",
)
_PRECISIONS = flags.DEFINE_list(
    "precisions",
    list(export_lib.PRECISIONS),
    "--parts=precision: the export precisions compared (the first is the baseline); "
    "PRECISION:plain keeps SRResNet's last conv as built (export_lib.with_precision).",
)
_GENERATORS = flags.DEFINE_list(
    "generators",
    list(trainer_config.GENERATORS),
    "Architectures of --parts=generators, each at its reference size.",
)
_ROUNDS = flags.DEFINE_integer(
    "rounds", 5, "--parts=generators: timed rounds, each calling every path once (median)."
)
_LOAD_SECONDS = flags.DEFINE_float("load_seconds", 60.0, "Seconds of load per protocol.")
_LOAD_CLIENTS = flags.DEFINE_integer("load_clients", 8, "Concurrent clients under load.")
_TILE_SIZE = flags.DEFINE_integer("tile_size", TilingConfig.tile_size, "Tile core side.")
_TILE_OVERLAP = flags.DEFINE_integer("tile_overlap", TilingConfig.overlap, "Tile context.")

_NAME = "bench"
_MEMORY_SCRIPT = """
import json, resource, sys, time
import numpy as np, tensorflow as tf
model = tf.saved_model.load(sys.argv[1])
side = int(sys.argv[2])
lr = np.random.default_rng(0).integers(0, 256, (1, side, side, 3), dtype=np.uint8)
upscale = model.signatures["upscale_uint8"]
upscale(lr_image=tf.constant(lr[:, :32, :32]))  # Warm-up, as TF Serving does: graph set-up.
loaded_kb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
start = time.perf_counter()
sr = upscale(lr_image=tf.constant(lr))["sr_image"].numpy()
seconds = time.perf_counter() - start
np.save(sys.argv[3], sr)
print(json.dumps({"seconds": seconds, "loaded_mb": loaded_kb / 1024,
                  "peak_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}))
"""


def random_png(side, seed=0):
    import io

    from PIL import Image

    rng = np.random.default_rng(seed)
    small = rng.integers(0, 256, (side // 8, side // 8, 3), dtype=np.uint8)
    image = Image.fromarray(small).resize((side, side), Image.BICUBIC)
    buffer = io.BytesIO()
    image.save(buffer, "PNG")
    return buffer.getvalue()


def export(generator, config, base, name, tiling):
    return export_lib.export_generator(generator, config, base, name, tiling_config=tiling)


def time_requests(call, num_requests, concurrency):
    """Runs `call()` num_requests times over `concurrency` threads: (latencies s, images/s)."""

    def timed(_):
        start = time.perf_counter()
        call()
        return time.perf_counter() - start

    for _ in range(2):
        call()  # Warm-up (first-call graph set-up, connections).
    start = time.perf_counter()
    with concurrent.futures.ThreadPoolExecutor(concurrency) as pool:
        latencies = list(pool.map(timed, range(num_requests)))
    return latencies, num_requests / (time.perf_counter() - start)


def _row(path, concurrency, latencies, throughput):
    p50 = statistics.median(latencies) * 1000
    p95 = float(np.percentile(latencies, 95)) * 1000
    return f"| {path:10} | {concurrency:>3} | {p50:8.0f} | {p95:8.0f} | {throughput:8.2f} |"


def latency_table(export_dir, model_base_path, png, num_requests, concurrencies):
    import tensorflow as tf

    model = tf.saved_model.load(export_dir)
    signature = model.signatures[contract.BYTES_SIGNATURE]
    batch = tf.constant([png])
    paths = {"in-process": lambda: signature(image_bytes=batch)[contract.BYTES_OUTPUT].numpy()}
    server = server_process.start(model_base_path, _NAME)
    rest, grpc = server.rest_address, server.grpc_address
    clients = [
        client_lib.ServingClient(rest, client_lib.REST, _NAME),
        client_lib.ServingClient(grpc, client_lib.GRPC, _NAME),
    ]
    paths["REST"] = lambda: clients[0].upscale_encoded([png])
    paths["gRPC"] = lambda: clients[1].upscale_encoded([png])
    rows = ["| path       | clients | p50 ms | p95 ms | images/s |", "|---|---|---|---|---|"]
    try:
        for concurrency in concurrencies:
            for path, call in paths.items():
                rows.append(
                    _row(path, concurrency, *time_requests(call, num_requests, concurrency))
                )
                print(rows[-1], flush=True)
    finally:
        for client in clients:
            client.close()
        server.stop()
    return rows


def memory_run(export_dir, side, out_path):
    result = subprocess.run(
        [sys.executable, "-c", _MEMORY_SCRIPT, export_dir, str(side), out_path],
        capture_output=True,
        text=True,
    )
    if result.returncode:
        return {"error": result.stderr.strip().splitlines()[-1]}
    return json.loads(result.stdout.strip().splitlines()[-1])


def memory_table(generator, config, work_dir, sides, untiled_max, tiling):
    base = os.path.join(work_dir, "memory")
    untiled = TilingConfig(tile_size=max(sides), overlap=0, max_input_pixels=max(sides) ** 2)
    dirs = {
        "untiled": export(generator, config, base, "untiled", untiled),
        "tiled": export(
            generator,
            config,
            base,
            "tiled",
            TilingConfig(tiling.tile_size, tiling.overlap, max(sides) ** 2),
        ),
    }
    rows = [
        "| input | path | seconds | RSS after load MB | peak RSS MB | max abs diff |",
        "|---|---|---|---|---|---|",
    ]
    for side in sides:
        outputs = {}
        for path, export_dir in dirs.items():
            if path == "untiled" and side > untiled_max:
                continue
            outputs[path] = os.path.join(work_dir, f"{path}_{side}.npy")
            stats = memory_run(export_dir, side, outputs[path])
            diff = ""
            if path == "tiled" and "untiled" in outputs and "error" not in stats:
                diff = int(
                    np.abs(
                        np.load(outputs["tiled"]).astype(int) - np.load(outputs["untiled"])
                    ).max()
                )
            rows.append(
                f"| {side}x{side} | {path} | {stats.get('seconds', 0):.1f} | "
                f"{stats.get('loaded_mb', 0):.0f} | {stats.get('peak_mb', 0):.0f} | "
                f"{diff} {stats.get('error', '')}|"
            )
            print(rows[-1], flush=True)
    return rows


def _memory_mb(pid):
    """(VmRSS, VmHWM) of a process in MB."""
    with open(f"/proc/{pid}/status", encoding="ascii") as f:
        fields = dict(line.split(":", 1) for line in f)
    return tuple(int(fields[k].split()[0]) / 1024 for k in ("VmRSS", "VmHWM"))


def _client_loop(address, protocol, png, deadline):
    """One client sending `png` back to back until `deadline`: (latencies s, error reprs)."""
    latencies, errors = [], []
    with client_lib.ServingClient(address, protocol, _NAME) as client:
        while time.monotonic() < deadline:
            start = time.perf_counter()
            try:
                (sr,) = client.upscale_encoded([png])
                if not sr.startswith(b"\x89PNG"):
                    raise ValueError("not a PNG")
                latencies.append(time.perf_counter() - start)
            except Exception as e:  # counted; the load goes on
                errors.append(repr(e))
    return latencies, errors


def load_table(model_base_path, png, seconds, num_clients):
    """num_clients threads per protocol, each with its own client, for `seconds` each."""
    rows = [
        "| protocol | clients | seconds | requests | errors | p50 ms | p95 ms | images/s "
        "| RSS before MB | RSS after MB | peak MB |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    with server_process.start(model_base_path, _NAME) as server:
        for protocol, address in (
            (contract.REST, server.rest_address),
            (contract.GRPC, server.grpc_address),
        ):
            with client_lib.ServingClient(address, protocol, _NAME) as warm:
                warm.upscale_encoded([png])
            rss_before, _ = _memory_mb(server.process.pid)
            deadline = time.monotonic() + seconds

            start = time.perf_counter()
            with concurrent.futures.ThreadPoolExecutor(num_clients) as pool:
                futures = [
                    pool.submit(_client_loop, address, protocol, png, deadline)
                    for _ in range(num_clients)
                ]
                results = [f.result() for f in futures]
            elapsed = time.perf_counter() - start
            latencies = [t for r in results for t in r[0]]
            errors = [e for r in results for e in r[1]]
            rss_after, peak = _memory_mb(server.process.pid)
            p50 = statistics.median(latencies) * 1000 if latencies else 0
            p95 = float(np.percentile(latencies, 95)) * 1000 if latencies else 0
            rows.append(
                f"| {protocol} | {num_clients} | {elapsed:.0f} | {len(latencies) + len(errors)} "
                f"| {len(errors)} | {p50:.0f} | {p95:.0f} | {len(latencies) / elapsed:.2f} "
                f"| {rss_before:.0f} | {rss_after:.0f} | {peak:.0f} |"
            )
            print(rows[-1], flush=True)
            for error in sorted(set(errors))[:5]:
                print(f"  error: {error}", flush=True)
    return rows


def _generator_paths(architecture, work_dir, lr_uint8, png):
    """(config, tiling, conv multiply-adds per image, {path: call}) of one reference-size
    generator: served through its export, and the bare Keras network."""
    import tensorflow as tf

    config = trainer_config.GeneratorConfig(scale=4, architecture=architecture)
    generator = generator_store.build_generator(config)
    macs = sum(common.conv_macs_per_lr_pixel(generator).values()) * lr_uint8.shape[1] ** 2
    tiling = export_lib.tiling_for(config)
    export_dir = export(generator, config, work_dir, architecture, tiling)
    signature = tf.saved_model.load(export_dir).signatures[contract.BYTES_SIGNATURE]
    batch = tf.constant([png])
    network = tf.function(lambda lr: generator(lr, training=False))
    lr_float = tf.cast(lr_uint8, tf.float32) / 255.0
    paths = {
        "serving_default": lambda: signature(image_bytes=batch)[contract.BYTES_OUTPUT].numpy(),
        "network only": lambda: network(lr_float).numpy(),
    }
    return config, tiling, macs, paths


def generators_table(architectures, side, rounds, work_dir):
    """p50 latency and conv GFLOP/s of each architecture, all paths timed in alternation."""
    import tensorflow as tf

    png = random_png(side)
    lr_uint8 = tf.io.decode_png(png, channels=3)[tf.newaxis]
    calls, info = {}, {}
    for architecture in architectures:
        config, tiling, macs, paths = _generator_paths(architecture, work_dir, lr_uint8, png)
        info[architecture] = (config, tiling, macs)
        for path, call in paths.items():
            calls[(architecture, path)] = (call, 1)
    print(f"generators built and exported; {rounds} rounds in alternation", flush=True)
    rates = common.interleaved_steps_per_second(calls, rounds)
    baseline = {path: 1.0 / rates[(architectures[0], path)] for _, path in calls}
    rows = [
        "| generator | size | tile / overlap | path | GMAC / image | p50 ms "
        f"| vs {architectures[0]} | GFLOP/s |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for (architecture, path), rate in rates.items():
        config, tiling, macs = info[architecture]
        seconds = 1.0 / rate
        rows.append(
            f"| {architecture} | {config.num_blocks} x {config.channels} "
            f"| {tiling.tile_size} / {tiling.overlap} | {path} | {macs / 1e9:.1f} "
            f"| {seconds * 1000:.0f} | {baseline[path] / seconds:.2f}x "
            f"| {2 * macs / seconds / 1e9:.1f} |"
        )
        print(rows[-1], flush=True)
    return rows


def _serve_png(signature, batch):
    return signature(image_bytes=batch)[contract.BYTES_OUTPUT].numpy()


def _precision_paths(architecture, precisions, work_dir, lr_uint8, png):
    """(config, conv multiply-adds per image, {(precision, path): call}) of one reference-size
    generator exported at each precision: served, and its cast network alone."""
    import tensorflow as tf

    config = trainer_config.GeneratorConfig(scale=4, architecture=architecture)
    generator = generator_store.build_generator(config)
    macs = sum(common.conv_macs_per_lr_pixel(generator).values()) * lr_uint8.shape[1] ** 2
    tiling = export_lib.tiling_for(config)
    batch = tf.constant([png])
    lr_float = tf.cast(lr_uint8, tf.float32) / 255.0
    paths = {}
    for precision in precisions:
        # "bfloat16:plain": that precision with the last conv as built (no SpaceToDepthConv2D).
        dtype, _, variant = precision.partition(":")
        export_dir = export_lib.export_generator(
            generator,
            config,
            work_dir,
            f"{architecture}_{dtype}{variant}",
            tiling_config=tiling,
            precision=dtype,
            split_output_conv=variant != "plain",
        )
        signature = tf.saved_model.load(export_dir).signatures[contract.BYTES_SIGNATURE]
        model = export_lib.with_precision(generator, config, dtype, variant != "plain")
        network = tf.function(lambda lr, model=model: model(lr, training=False))
        paths[(precision, "serving_default")] = functools.partial(_serve_png, signature, batch)
        paths[(precision, "network only")] = lambda network=network: network(lr_float).numpy()
    return config, macs, paths


def precision_table(architectures, precisions, side, rounds, work_dir):
    """p50 latency and conv GFLOP/s of every (architecture, precision, path), in alternation."""
    import tensorflow as tf

    png = random_png(side)
    lr_uint8 = tf.io.decode_png(png, channels=3)[tf.newaxis]
    calls, info = {}, {}
    for architecture in architectures:
        config, macs, paths = _precision_paths(architecture, precisions, work_dir, lr_uint8, png)
        info[architecture] = (config, macs)
        for (precision, path), call in paths.items():
            calls[(architecture, precision, path)] = (call, 1)
    print(f"{len(calls)} paths exported; {rounds} rounds in alternation", flush=True)
    rates = common.interleaved_steps_per_second(calls, rounds)
    rows = [
        f"| generator | precision | path | GMAC / image | p50 ms | vs {precisions[0]} | GFLOP/s |",
        "|---|---|---|---|---|---|---|",
    ]
    for (architecture, precision, path), rate in rates.items():
        config, macs = info[architecture]
        seconds = 1.0 / rate
        baseline = 1.0 / rates[(architecture, precisions[0], path)]
        rows.append(
            f"| {architecture} {config.num_blocks} x {config.channels} | {precision} | {path} "
            f"| {macs / 1e9:.1f} | {seconds * 1000:.0f} | {baseline / seconds:.2f}x "
            f"| {2 * macs / seconds / 1e9:.1f} |"
        )
        print(rows[-1], flush=True)
    return rows


def main(argv):
    del argv
    config = generator_store.GeneratorConfig(
        scale=4, num_blocks=_NUM_BLOCKS.value, channels=_CHANNELS.value
    )
    generator = generator_store.build_generator(config)
    tiling = TilingConfig(tile_size=_TILE_SIZE.value, overlap=_TILE_OVERLAP.value)
    print(f"generator {config}, tiling {tiling}; the machine is shared: numbers are noisy.")
    with tempfile.TemporaryDirectory() as work_dir:
        export_dir = export(generator, config, work_dir, _NAME, tiling)
        png = random_png(_SIZE.value)
        parts = set(_PARTS.value)
        latency = memory = load = compared = precision = None
        if "precision" in parts:
            precision = precision_table(
                _GENERATORS.value, _PRECISIONS.value, _SIZE.value, _ROUNDS.value, work_dir
            )
        if "generators" in parts:
            compared = generators_table(_GENERATORS.value, _SIZE.value, _ROUNDS.value, work_dir)
        if "latency" in parts:
            latency = latency_table(
                export_dir,
                os.path.join(work_dir, _NAME),
                png,
                _REQUESTS.value,
                [int(c) for c in _CONCURRENCY.value],
            )
        if "memory" in parts:
            memory = memory_table(
                generator,
                config,
                work_dir,
                [int(s) for s in _TILED_SIZES.value],
                _UNTILED_MAX.value,
                tiling,
            )
        if "load" in parts:
            load = load_table(
                os.path.join(work_dir, _NAME), png, _LOAD_SECONDS.value, _LOAD_CLIENTS.value
            )
    size, out = _SIZE.value, _SIZE.value * config.scale
    if latency:
        print(f"\n{size}x{size} -> {out}x{out} PNG through serving_default:")
        print("\n".join(latency))
    if memory:
        print("\nOne image through upscale_uint8 in a fresh process after a 32x32 warm-up:")
        print("\n".join(memory))
    if compared:
        print(
            f"\n{size}x{size} -> {out}x{out}, reference-size generators (random weights), "
            "in process:"
        )
        print("\n".join(compared))
    if precision:
        print(
            f"\n{size}x{size} -> {out}x{out}, reference-size generators (random weights) per "
            "export precision, in process (network only: the cast Keras model, no PNG, no tiling):"
        )
        print("\n".join(precision))
    if load:
        print(f"\nSustained load, {size}x{size} -> {out}x{out} PNG, one server process:")
        print("\n".join(load))


if __name__ == "__main__":
    app.run(main)
