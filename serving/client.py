r"""Upscales an image file or a folder through TF Serving (or serving.local_server).

  srgan-client --server=127.0.0.1:8501 --protocol=rest --model_name=srgan \
      --input=lr.png --output=sr.png
  python -m serving.client --server=127.0.0.1:8500 --protocol=grpc --input=lr_dir --output=sr_dir

Needs no TensorFlow (numpy, pillow, absl-py; grpcio and protobuf for --protocol=grpc).
"""

import srgan_cli

srgan_cli.quiet_console()  # before gRPC is imported

import sys  # noqa: E402

from absl import app, flags  # noqa: E402

from serving import client_errors, client_lib, contract, upscale_files  # noqa: E402

_SERVER = flags.DEFINE_string(
    "server", "127.0.0.1:8501", "host:port (the REST port for rest, the gRPC port for grpc)."
)
_PROTOCOL = flags.DEFINE_enum("protocol", contract.REST, contract.PROTOCOLS, "API to use.")
_MODEL_NAME = flags.DEFINE_string("model_name", contract.DEFAULT_MODEL_NAME, "Served model.")
_VERSION = flags.DEFINE_integer("version", None, "Model version (default: the newest).")
_SIGNATURE = flags.DEFINE_enum(
    "signature",
    contract.BYTES_SIGNATURE,
    contract.SIGNATURES,
    "serving_default sends PNG bytes; upscale_uint8 sends pixels.",
)
_INPUT = flags.DEFINE_string("input", None, "An image file or a folder of images.")
_OUTPUT = flags.DEFINE_string("output", None, "Output PNG file, or folder for a folder input.")
_TIMEOUT = flags.DEFINE_float("timeout", 120.0, "Seconds per request attempt.")
_RETRIES = flags.DEFINE_integer("retries", 2, "Extra attempts when the server is unreachable.")


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"Unexpected arguments: {argv[1:]}")
    try:
        jobs = upscale_files.plan(_INPUT.value, _OUTPUT.value)
        with client_lib.ServingClient(
            _SERVER.value,
            _PROTOCOL.value,
            _MODEL_NAME.value,
            _VERSION.value,
            _TIMEOUT.value,
            _RETRIES.value,
        ) as client:
            for input_file, output_file in jobs:
                width, height = upscale_files.upscale_file(
                    client, input_file, output_file, _SIGNATURE.value
                )
                print(f"{input_file} -> {output_file} ({width}x{height})")
    except (client_errors.ServingError, OSError, ValueError) as e:
        sys.exit(f"error: {e}")


def run():
    """The `srgan-client` console script."""
    flags.mark_flags_as_required(["input", "output"])
    app.run(main)


if __name__ == "__main__":
    run()
