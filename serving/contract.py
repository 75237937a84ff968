"""The serving contract: every name and limit that export, server, client and tests agree on.

Pure constants, no imports: the client (which must not need TensorFlow), the exporter, the local
server and the tests all import this module, so a name cannot drift between them.
"""

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
# The one output of each signature (TF Serving drops a lone output's name in columnar answers).
OUTPUT_OF = {BYTES_SIGNATURE: BYTES_OUTPUT, TENSOR_SIGNATURE: TENSOR_OUTPUT}

# Files inside a version directory EXPORT_BASE/NAME/<version>/.
WARMUP_FILE = "assets.extra/tf_serving_warmup_requests"
# What the export is (scale, generator config, tiling, precision): JSON, readable without TF.
METADATA_FILE = "assets.extra/srgan_export.json"

# Protocols of the client.
REST = "rest"
GRPC = "grpc"
PROTOCOLS = (REST, GRPC)

# TF Serving status names (tensorflow/core/protobuf/error_codes.proto), their gRPC codes (the same
# numbers) and the HTTP status TF Serving's REST API answers with.
OK = "OK"
INVALID_ARGUMENT = "INVALID_ARGUMENT"
NOT_FOUND = "NOT_FOUND"
INTERNAL = "INTERNAL"
UNAVAILABLE = "UNAVAILABLE"
CANCELLED = "CANCELLED"
DEADLINE_EXCEEDED = "DEADLINE_EXCEEDED"
RESOURCE_EXHAUSTED = "RESOURCE_EXHAUSTED"
UNIMPLEMENTED = "UNIMPLEMENTED"
# Every status's HTTP code as TF Serving's REST API answers it (model_servers/http_server.cc
# ToHTTPStatusCode; 499: the client closed the request).
HTTP_STATUS = {
    OK: 200,
    CANCELLED: 499,
    "UNKNOWN": 500,
    INVALID_ARGUMENT: 400,
    DEADLINE_EXCEEDED: 504,
    NOT_FOUND: 404,
    "ALREADY_EXISTS": 409,
    "PERMISSION_DENIED": 403,
    RESOURCE_EXHAUSTED: 429,
    "FAILED_PRECONDITION": 400,
    "ABORTED": 409,
    "OUT_OF_RANGE": 400,
    UNIMPLEMENTED: 501,
    INTERNAL: 500,
    UNAVAILABLE: 503,
    "DATA_LOSS": 500,
    "UNAUTHENTICATED": 401,
}
# ModelVersionStatus.State of a served version.
AVAILABLE = "AVAILABLE"

# Upscaled images are large: TF Serving itself accepts messages far over gRPC's 4 MiB default,
# and a client needs the same receive limit.
MAX_MESSAGE_BYTES = 512 * 1024 * 1024
GRPC_CHANNEL_OPTIONS = (
    ("grpc.max_receive_message_length", MAX_MESSAGE_BYTES),
    ("grpc.max_send_message_length", MAX_MESSAGE_BYTES),
)
