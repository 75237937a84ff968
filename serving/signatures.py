"""Serving interface names, shared by export, client, local server and tests."""

DEFAULT_MODEL_NAME = "srgan"

# serving_default: encoded image bytes in, PNG bytes out. Names ending in `_bytes` make TF Serving
# REST base64-encode the string output as {"b64": ...}.
BYTES_SIGNATURE = "serving_default"
BYTES_INPUT = "image_bytes"
BYTES_OUTPUT = "sr_image_bytes"

# Tensor signature for batch clients: uint8 [N, H, W, 3] in, uint8 [N, H*s, W*s, 3] out.
TENSOR_SIGNATURE = "upscale_uint8"
TENSOR_INPUT = "lr_image"
TENSOR_OUTPUT = "sr_image"

SIGNATURES = (BYTES_SIGNATURE, TENSOR_SIGNATURE)

WARMUP_FILE = "assets.extra/tf_serving_warmup_requests"
