"""Upscales image files (one file or a folder) through a serving.client_lib.ServingClient.

Files are read by the one decode rule, data_prep.images.load_rgb, for both signatures: the
served model sees the pixels data prep and evaluation see (16-bit, grayscale, palette and RGBA
files included), and a bad file is one clear error before anything is sent. Needs no TensorFlow.
"""

import io
import os

import numpy as np
from PIL import Image

from data_prep import images
from serving import contract


def plan(input_path, output_path):
    """(input file, output PNG path) pairs; a folder input maps to a folder output.

    A folder contributes its files whose ending is in data_prep.images.IMAGE_EXTENSIONS, sorted.

    Raises:
      FileNotFoundError: the input is neither a file nor a folder with images.
      ValueError: two inputs of a folder would write the same output file.
    """
    if os.path.isdir(input_path):
        names = sorted(
            n for n in os.listdir(input_path) if n.lower().endswith(images.IMAGE_EXTENSIONS)
        )
        if not names:
            raise FileNotFoundError(
                f"No {'/'.join(images.IMAGE_EXTENSIONS)} images in {input_path}."
            )
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
    """Upscales one file with the bytes or the tensor signature; returns the output size (w, h).

    The bytes signature is sent a lossless PNG of the decoded pixels (not the file's own bytes),
    so the server decodes exactly what load_rgb decoded.

    Raises:
      OSError: the file cannot be read or the output cannot be written.
      data_prep.images.ImageError (a ValueError): the file is not a readable image.
      serving.client_errors.ServingError: the server failed or refused.
    """
    lr = images.load_rgb(input_file)
    if signature_name == contract.TENSOR_SIGNATURE:
        png = _encode_png(client.upscale_array(lr[np.newaxis])[0])
    else:
        png = client.upscale_encoded([_encode_png(lr)])[0]
    os.makedirs(os.path.dirname(os.path.abspath(output_file)), exist_ok=True)
    with open(output_file, "wb") as f:
        f.write(png)
    return Image.open(io.BytesIO(png)).size


def _encode_png(image):
    buffer = io.BytesIO()
    Image.fromarray(image).save(buffer, format="PNG")
    return buffer.getvalue()
