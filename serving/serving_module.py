"""The exported tf.Module: the generator behind two serving signatures (serving.contract names).

  serving_default  image_bytes string [-1] (PNG/JPEG/GIF/BMP/WebP)          -> sr_image_bytes PNG
  upscale_uint8    lr_image uint8 [-1, -1, -1, 3]                            -> sr_image uint8

Both run the generator through serving.tiling, so a large input is upscaled in bounded memory,
and both reject an input over `max_input_pixels` with an InvalidArgument error that says so.
serving_default reads each image's header in the graph (serving.image_header) before decoding:
other formats, truncated headers and animated WebP are refused, and a GIF's first frame only is
decoded (an animation's other frames are dropped, as most SR tools do).

The generator may compute in bfloat16 or float16 (serving.export_lib.with_precision: a copy with
its weights cast once at export); the uint8 input is scaled to [0, 1] in float32 and the output is
rounded to uint8 in float32 (trainer.value_range), so the signatures do not change with it.
"""

import dataclasses

import tensorflow as tf

from serving import contract, image_header, tiling
from trainer import value_range


@dataclasses.dataclass(frozen=True)
class TilingConfig:
    """How the graph cuts large inputs.

    Attributes:
      tile_size: core side in LR pixels; inputs up to this size run in one piece.
      overlap: LR pixels of context around every core (>= the generator's receptive-field
        radius gives exactly the untiled output; 16 is within 1/255 for the paper generator).
      max_input_pixels: per-image H*W limit; larger inputs are rejected.
    """

    tile_size: int = 128
    overlap: int = 16
    max_input_pixels: int = 2048 * 2048

    def __post_init__(self):
        if self.tile_size < 1 or self.overlap < 0 or self.max_input_pixels < 1:
            raise ValueError(f"Invalid tiling configuration: {self}.")


class SuperResolutionModule(tf.Module):
    """Holds the generator and exposes the serving signatures."""

    def __init__(self, generator, scale, tiling_config: TilingConfig):
        super().__init__(name="super_resolution")
        self.generator = generator
        self._scale = scale
        self._tiling = tiling_config

    def _capture_weights(self):
        """Captures the generator's variables at the signature's top level.

        Otherwise their first use is inside the tiling and map_fn loops, so the function's
        inputs for them are created under the loops' name scopes ("map/while/input_6") and
        tf.saved_model.save renames (and logs) every one of them.
        """
        graph = tf.compat.v1.get_default_graph()
        for i, variable in enumerate(self.generator.variables):
            graph.capture(variable.value.handle, name=f"weight_{i}")

    def _generate_uint8(self, lr_uint8):
        return value_range.generate_uint8(self.generator, lr_uint8)

    def _assert_within_limit(self, pixels):
        limit = self._tiling.max_input_pixels
        return tf.debugging.assert_less_equal(
            pixels,
            tf.constant(limit, tf.int64),
            message=f"Input image is over the pixel limit: height * width must be at most "
            f"max_input_pixels={limit}. Downscale it, or export with a larger "
            f"--max_input_pixels.",
        )

    def upscale(self, lr_uint8):
        """uint8 [N, H, W, 3] -> uint8 [N, H*s, W*s, 3], tiled, size-checked."""
        shape = tf.shape(lr_uint8, out_type=tf.int64)
        with tf.control_dependencies([self._assert_within_limit(shape[1] * shape[2])]):
            lr_uint8 = tf.identity(lr_uint8)
        sr = tiling.tiled_upscale(
            self._generate_uint8,
            lr_uint8,
            self._scale,
            self._tiling.tile_size,
            self._tiling.overlap,
        )
        sr.set_shape([lr_uint8.shape[0], None, None, 3])
        return sr

    def _upscale_encoded(self, image_bytes):
        # Checked on the header first, so that a tiny file declaring a huge image is not decoded;
        # a format whose header is not read is refused, and a GIF is cut after its first image.
        header = image_header.inspect(image_bytes, self._tiling.max_input_pixels)
        with tf.control_dependencies([self._assert_within_limit(header.pixels)]):
            contents = tf.identity(header.contents)
        image = tf.io.decode_image(contents, channels=3, dtype=tf.uint8, expand_animations=False)
        sr = self.upscale(image[tf.newaxis])[0]
        return tf.io.encode_png(sr)

    @tf.function(input_signature=[tf.TensorSpec([None], tf.string, name=contract.BYTES_INPUT)])
    def serve_bytes(self, image_bytes):
        self._capture_weights()
        sr_png = tf.map_fn(
            self._upscale_encoded, image_bytes, fn_output_signature=tf.TensorSpec([], tf.string)
        )
        return {contract.BYTES_OUTPUT: sr_png}

    @tf.function(
        input_signature=[tf.TensorSpec([None, None, None, 3], tf.uint8, name=contract.TENSOR_INPUT)]
    )
    def serve_uint8(self, lr_image):
        self._capture_weights()
        return {contract.TENSOR_OUTPUT: self.upscale(lr_image)}

    def signature_functions(self):
        return {
            contract.BYTES_SIGNATURE: self.serve_bytes.get_concrete_function(),
            contract.TENSOR_SIGNATURE: self.serve_uint8.get_concrete_function(),
        }
