"""What one request may cost the local server: the limits a deployer sets, validated once.

The exported graph bounds each image (TilingConfig.max_input_pixels, checked on the encoded
header before decoding). These bound a whole request before anything is materialised: its body,
its number of images, the pixels of a tensor request, and how long and how many requests may
hold a thread. srgan-serve sets them with flags of the same names.
"""

import dataclasses

MIB = 1024 * 1024


@dataclasses.dataclass(frozen=True)
class ServerLimits:
    """Per-request and per-server bounds.

    Attributes:
      max_body_bytes: largest REST body and gRPC request message accepted.
      max_instances: images per request (batch size of either signature).
      max_request_pixels: N * H * W of an upscale_uint8 request, checked on the declared shape.
      max_threads: requests computed at once per protocol (REST workers, gRPC workers).
      read_timeout_seconds: a REST client must send its whole request within this time.
    """

    max_body_bytes: int = 64 * MIB
    max_instances: int = 16
    max_request_pixels: int = 2048 * 2048
    max_threads: int = 8
    read_timeout_seconds: float = 30.0

    def __post_init__(self):
        for field in dataclasses.fields(self):
            value = getattr(self, field.name)
            if not value > 0:
                raise ValueError(f"ServerLimits.{field.name} must be positive, got {value!r}.")
