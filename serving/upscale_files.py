"""Upscales image files (one file or a folder) through a serving.client_lib.ServingClient."""

import io
import os

import numpy as np
from PIL import Image

from serving import contract

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".gif")


def plan(input_path, output_path):
    """(input file, output PNG path) pairs; a folder input maps to a folder output."""
    if os.path.isdir(input_path):
        names = sorted(n for n in os.listdir(input_path) if n.lower().endswith(IMAGE_EXTENSIONS))
        if not names:
            raise FileNotFoundError(f"No {'/'.join(IMAGE_EXTENSIONS)} images in {input_path}.")
        outputs = [_png_name(n) for n in names]
        clashes = sorted({o for o in outputs if outputs.count(o) > 1})
        if clashes:
            raise ValueError(
                f"Several inputs in {input_path} would write the same output "
                f"{clashes}: rename them (e.g. a.png and a.jpg)."
            )
        return [
            (os.path.join(input_path, n), os.path.join(output_path, o))
            for n, o in zip(names, outputs, strict=True)
        ]
    if not os.path.isfile(input_path):
        raise FileNotFoundError(f"{input_path} is neither an image file nor a folder.")
    if os.path.isdir(output_path) or output_path.endswith(os.sep):
        return [(input_path, os.path.join(output_path, _png_name(input_path)))]
    return [(input_path, output_path)]


def _png_name(path):
    return os.path.splitext(os.path.basename(path))[0] + ".png"


def upscale_file(client, input_file, output_file, signature_name=contract.BYTES_SIGNATURE):
    """Upscales one file with the bytes or the tensor signature; returns the output size (w, h)."""
    with open(input_file, "rb") as f:
        data = f.read()
    if signature_name == contract.TENSOR_SIGNATURE:
        try:
            lr = np.asarray(Image.open(io.BytesIO(data)).convert("RGB"))
        except OSError as e:
            raise ValueError(f"{input_file} is not a readable image: {e}") from None
        png = _encode_png(client.upscale_array(lr[np.newaxis])[0])
    else:
        png = client.upscale_encoded([data])[0]
    os.makedirs(os.path.dirname(os.path.abspath(output_file)), exist_ok=True)
    with open(output_file, "wb") as f:
        f.write(png)
    return Image.open(io.BytesIO(png)).size


def _encode_png(image):
    buffer = io.BytesIO()
    Image.fromarray(image).save(buffer, format="PNG")
    return buffer.getvalue()
