"""Small synthetic datasets for tests that need shards without running the Beam job.

Shards are written with the same schema module the Beam job uses (data_prep.schema), so a
reader test here exercises the real format.
"""

import io
import json
import os
import pathlib
import urllib.error
import urllib.request

import numpy as np
import tensorflow as tf
from PIL import Image

from data_prep import schema


def make_image(height, width, seed=0):
    """A smooth random RGB uint8 image (low-frequency pattern plus a little noise)."""
    rng = np.random.default_rng(seed)
    small = rng.integers(0, 256, size=(max(height // 8, 2), max(width // 8, 2), 3), dtype=np.uint8)
    image = np.asarray(Image.fromarray(small).resize((width, height), Image.BICUBIC), np.int16)
    image = image + rng.integers(-8, 9, size=image.shape)
    return np.clip(image, 0, 255).astype(np.uint8)


def downscale(hr, scale):
    """Antialiased bicubic downscale (PIL), the LR synthesis rule."""
    h, w = hr.shape[:2]
    return np.asarray(Image.fromarray(hr).resize((w // scale, h // scale), Image.BICUBIC))


def png_bytes(image):
    buffer = io.BytesIO()
    Image.fromarray(image).save(buffer, format="PNG")
    return buffer.getvalue()


def pair_record(key, hr, scale, lr=None):
    lr = downscale(hr, scale) if lr is None else lr
    return schema.PairRecord(
        key=key,
        scale=scale,
        lr_png=png_bytes(lr),
        lr_height=lr.shape[0],
        lr_width=lr.shape[1],
        hr_png=png_bytes(hr),
        hr_height=hr.shape[0],
        hr_width=hr.shape[1],
    )


def write_dataset(out_dir, splits, scale=4, num_shards=2, compressed=False):
    """Writes a complete dataset directory.

    Args:
      out_dir: directory to create.
      splits: split name -> list of (key, hr uint8 array) pairs; LR is the bicubic downscale.
      scale: the scale factor.
      num_shards: shards per split (records dealt round-robin).
      compressed: GZIP shards.

    Returns:
      The Manifest written.
    """
    os.makedirs(out_dir, exist_ok=True)
    infos = {}
    for split, items in splits.items():
        names = [schema.shard_name(split, i, num_shards, compressed) for i in range(num_shards)]
        options = tf.io.TFRecordOptions(compression_type=schema.compression_type(compressed))
        writers = [tf.io.TFRecordWriter(os.path.join(out_dir, n), options) for n in names]
        lr_sides = []
        for i, (key, hr) in enumerate(items):
            record = pair_record(key, hr, scale)
            writers[i % num_shards].write(schema.to_example(record).SerializeToString())
            lr_sides.append((record.lr_height, record.lr_width))
        for writer in writers:
            writer.close()
        infos[split] = schema.SplitInfo(
            num_examples=len(items),
            files=tuple(names),
            min_lr_height=min((s[0] for s in lr_sides), default=0),
            min_lr_width=min((s[1] for s in lr_sides), default=0),
        )
    total = sum(len(items) for items in splits.values())
    manifest = schema.Manifest(
        scale=scale, compressed=compressed, num_inputs=total, num_rejected=0, splits=infos
    )
    with open(schema.manifest_path(out_dir), "w") as f:
        f.write(manifest.to_json())
    return manifest


# The real benchmark pairs beside the checkout (../shared/data), or where SRGAN_SHARED_DATA points.
# Tests that need them skip when they are absent: the project itself never needs them.
REPO = pathlib.Path(__file__).resolve().parents[1]
SHARED_DATA = pathlib.Path(os.environ.get("SRGAN_SHARED_DATA", REPO.parent / "shared" / "data"))


def rest_json(address, path, body=None, timeout=60):
    """(HTTP status, decoded JSON answer) of a REST call to a server at `address` ("host:port"):
    a GET when `body` is None, else a POST of `body` (bytes as they are, anything else as JSON).
    Error statuses are answers too: TF Serving's REST API explains them in a JSON body."""
    data = body if body is None or isinstance(body, bytes) else json.dumps(body).encode()
    request = urllib.request.Request(f"http://{address}{path}", data=data)
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read())
