"""Upscaling large images in overlapping tiles, inside the graph, so memory stays bounded.

Overlap-crop: the image is cut into a grid of cores of at most `tile_size` x `tile_size` LR pixels.
Each core is run through the generator together with up to `overlap` pixels of real image context
on every side (clipped at the image border, where the network sees the same zero padding as an
untiled run), and only the upscaled core is kept. With `overlap` at least the generator's
receptive-field radius the result equals the untiled output; below it the difference is small
and, since cores never overlap in the output, there is no visible seam or blend ghosting.

Peak memory is set by one tile (tile_size + 2 * overlap)^2, not by the image.
"""

import tensorflow as tf


def _ceil_div(a, b):
    return (a + b - 1) // b


def _tile_bounds(index, tile_size, overlap, length):
    """(input start, input end, crop start, crop end) along one axis for core `index`."""
    start = index * tile_size
    end = tf.minimum(start + tile_size, length)
    in_start = tf.maximum(start - overlap, 0)
    in_end = tf.minimum(end + overlap, length)
    return in_start, in_end, start - in_start, end - in_start


def _upscale_tile(upscale_fn, images, row, col, tile_size, overlap, scale):
    """Upscales the core (row, col) with its context and returns the upscaled core alone."""
    shape = tf.shape(images)
    y0, y1, cy0, cy1 = _tile_bounds(row, tile_size, overlap, shape[1])
    x0, x1, cx0, cx1 = _tile_bounds(col, tile_size, overlap, shape[2])
    upscaled = upscale_fn(images[:, y0:y1, x0:x1, :])
    return upscaled[:, cy0 * scale : cy1 * scale, cx0 * scale : cx1 * scale, :]


def tiled_upscale(upscale_fn, images, scale, tile_size, overlap, output_dtype=tf.uint8):
    """Applies a fully convolutional `upscale_fn` to `images` tile by tile.

    Args:
      upscale_fn: [N, h, w, C] -> [N, h*scale, w*scale, C'] of `output_dtype` (e.g. the generator
        followed by the uint8 conversion, so the assembled output is small).
      images: [N, H, W, C] tensor, dynamic H and W.
      scale: the integer upscale factor of `upscale_fn`.
      tile_size: core side in input pixels; an input no larger than this runs in one piece.
      overlap: context pixels added on every side of a core.
      output_dtype: dtype returned by `upscale_fn`.

    Returns:
      [N, H*scale, W*scale, C'] equal (up to the overlap effect above) to upscale_fn(images).
    """
    shape = tf.shape(images)
    num_rows = _ceil_div(shape[1], tile_size)
    num_cols = _ceil_div(shape[2], tile_size)

    def upscale_row(row):
        # Cores are stacked along axis 0 so that TensorArray.concat can join ragged sizes.
        cols = tf.TensorArray(output_dtype, size=num_cols, infer_shape=False)

        def col_body(col, cols):
            tile = _upscale_tile(upscale_fn, images, row, col, tile_size, overlap, scale)
            return col + 1, cols.write(col, tf.transpose(tile, [2, 0, 1, 3]))

        # parallel_iterations=1: one tile in flight at a time, so memory is bounded by a tile.
        _, cols = tf.while_loop(
            lambda col, _: col < num_cols, col_body, (0, cols), parallel_iterations=1
        )
        return tf.transpose(cols.concat(), [1, 0, 2, 3])  # [W*s, N, h*s, C] -> [N, W*s, h*s, C]

    rows = tf.TensorArray(output_dtype, size=num_rows, infer_shape=False)

    def row_body(row, rows):
        strip = upscale_row(row)  # [N, W*s, h*s, C]
        return row + 1, rows.write(row, tf.transpose(strip, [2, 0, 1, 3]))

    _, rows = tf.while_loop(
        lambda row, _: row < num_rows, row_body, (0, rows), parallel_iterations=1
    )
    return tf.transpose(rows.concat(), [1, 0, 2, 3])  # [H*s, N, W*s, C] -> [N, H*s, W*s, C]
