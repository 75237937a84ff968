"""Writes the colour photographs bundled in scikit-image's wheel as HR-only PNG input.

  python -m data_prep.sample_images --output_dir=demo_out/photos

Needs the `demo` extra (scikit-image); nothing is downloaded. Photos that need a download in
this scikit-image version are skipped and named in the output.
"""

import os

import srgan_cli

srgan_cli.quiet_console()  # before scikit-image (and whatever it pulls in) is imported

from absl import app, flags  # noqa: E402
from PIL import Image  # noqa: E402

_OUTPUT_DIR = flags.DEFINE_string("output_dir", None, "Directory for the PNG files.")

# name -> loader on skimage.data; all natural RGB photographs shipped with the wheel.
_PHOTOS = {
    "astronaut": lambda data: data.astronaut(),
    "chelsea": lambda data: data.chelsea(),
    "coffee": lambda data: data.coffee(),
    "rocket": lambda data: data.rocket(),
    "motorcycle_left": lambda data: data.stereo_motorcycle()[0],
    "motorcycle_right": lambda data: data.stereo_motorcycle()[1],
    "hubble_deep_field": lambda data: data.hubble_deep_field(),
    "immunohistochemistry": lambda data: data.immunohistochemistry(),
    "retina": lambda data: data.retina(),
}


def write_photos(output_dir):
    """Writes every photo that loads offline; returns (written paths, skipped names)."""
    try:
        from skimage import data  # the `demo` extra, imported only here.
    except ImportError as e:
        raise RuntimeError("scikit-image is missing: pip install -e '.[demo]'") from e
    os.makedirs(output_dir, exist_ok=True)
    written, skipped = [], []
    for name, load in _PHOTOS.items():
        try:
            pixels = load(data)
        except (ModuleNotFoundError, OSError, ValueError):  # needs pooch / a download.
            skipped.append(name)
            continue
        path = os.path.join(output_dir, f"{name}.png")
        Image.fromarray(pixels).convert("RGB").save(path)
        written.append(path)
    return written, skipped


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"positional arguments are not accepted: {' '.join(argv[1:])}")
    written, skipped = write_photos(_OUTPUT_DIR.value)
    for path in written:
        print(path)
    skipped_text = f"; skipped (need a download): {', '.join(skipped)}" if skipped else ""
    print(f"sample_images: wrote {len(written)} photos to {_OUTPUT_DIR.value}{skipped_text}")


def run():
    """Console-script entry: parses the flags and runs main."""
    flags.mark_flag_as_required("output_dir")
    app.run(main)


if __name__ == "__main__":
    run()
