"""ESRGAN / Real-ESRGAN architectures: RRDBNet and SRVGGNetCompact generators (sizes, scales,
parameter counts), the generator config and its old generator.json files, the U-Net
discriminator at any patch size."""

import json

import keras
import numpy as np
import pytest
import tensorflow as tf

from data_prep import schema
from trainer import config as config_lib
from trainer import generator_store, models


def test_rrdb_x4_reference_has_basicsr_parameter_count():
    """BasicSR RRDBNet(num_in_ch=3, num_out_ch=3, num_feat=64, num_block=23, num_grow_ch=32), x4.

    Counted by hand from the reference architecture (3x3 convs: 9 * in * out + out):
      conv_first 3->64                                  1,792
      one ResidualDenseBlock: conv1 64->32     18,464
                              conv2 96->32     27,680
                              conv3 128->32    36,896
                              conv4 160->32    46,112
                              conv5 192->64   110,656 = 239,808
      one RRDB = 3 dense blocks                       719,424
      23 RRDBs                                     16,546,752
      conv_body 64->64                                 36,928
      conv_up1, conv_up2 64->64                        73,856
      conv_hr 64->64                                   36,928
      conv_last 64->3                                   1,731
      total                                        16,697,987

    The 23-block model takes ~15 s to build on a busy 2-core CPU (345 convs traced by the Keras
    functional API), so the test builds 1 and 2 blocks and checks both hand numbers: everything
    but the trunk (150,235 + one RRDB = 870,659) and one RRDB (719,424); the blocks are
    identical, so 23 blocks give 150,235 + 23 * 719,424 = 16,697,987.
    """

    def count(num_blocks):
        config = config_lib.GeneratorConfig(scale=4, architecture="rrdb", num_blocks=num_blocks)
        return generator_store.build_generator(config).count_params()

    one, two = count(1), count(2)
    assert one == 870_659 and two - one == 719_424
    assert one + 22 * (two - one) == 16_697_987


def test_compact_x4_reference_parameter_count():
    """BasicSR SRVGGNetCompact(num_feat=64, num_conv=16, upscale=4, act_type="prelu"), by hand:
    conv_first 3->64 1,792 + PReLU 64 + 16 x (conv 64->64 36,928 + PReLU 64) 591,872 +
    conv_last 64->48 27,696 = 621,424 (the brief's 1,197,052 matches no num_conv: 32 convs give
    1,213,296, Real-ESRGAN's realesr-general-x4v3)."""
    generator = generator_store.build_generator(
        config_lib.GeneratorConfig(scale=4, architecture="compact")
    )
    assert generator.count_params() == 621_424


@pytest.mark.parametrize("scale", schema.SCALES)
def test_rrdb_and_compact_build_every_scale(scale):
    rrdb = models.rrdb_generator(scale, num_blocks=1, channels=4, growth=2)
    upsamplers = [layer.size[0] for layer in rrdb.layers if hasattr(layer, "interpolation")]
    assert upsamplers == {2: [2], 3: [3], 4: [2, 2], 8: [2, 2, 2]}[scale]
    compact = models.compact_generator(scale, num_blocks=1, channels=4)
    for generator in (rrdb, compact):
        assert generator(tf.zeros([1, 5, 7, 3])).shape == (1, 5 * scale, 7 * scale, 3)


def test_compact_output_is_its_nearest_base_plus_the_body():
    generator = models.compact_generator(2, num_blocks=1, channels=4)
    last = [layer for layer in generator.layers if hasattr(layer, "kernel")][-1]
    last.kernel.assign(tf.zeros_like(last.kernel))
    last.bias.assign(tf.zeros_like(last.bias))
    lr = np.random.default_rng(0).uniform(size=(1, 3, 4, 3)).astype(np.float32)
    expected = np.repeat(np.repeat(lr, 2, axis=1), 2, axis=2) * 2.0 - 1.0  # in the HR range
    np.testing.assert_allclose(generator(lr).numpy(), expected, atol=1e-6)


def test_rrdb_bicubic_skip_starts_as_bicubic():
    generator = models.rrdb_generator(4, num_blocks=1, channels=4, growth=2, bicubic_skip=True)
    lr = tf.random.stateless_uniform([1, 6, 6, 3], [1, 2])
    expected = models.bicubic_upscale(lr, 4) * 2.0 - 1.0
    np.testing.assert_allclose(generator(lr).numpy(), expected.numpy(), atol=1e-5)


def test_generator_config_sizes_defaults_and_errors():
    assert config_lib.GeneratorConfig(scale=4).num_blocks == 16
    rrdb = config_lib.GeneratorConfig(scale=4, architecture="rrdb", channels=8)
    assert (rrdb.num_blocks, rrdb.channels, rrdb.growth) == (23, 8, 32)
    compact = config_lib.GeneratorConfig(scale=2, architecture="compact")
    assert (compact.num_blocks, compact.channels, compact.growth) == (16, 64, None)
    with pytest.raises(ValueError, match="growth applies to the rrdb generator only"):
        config_lib.GeneratorConfig(scale=4, growth=32)
    with pytest.raises(ValueError, match="growth applies to the rrdb generator only"):
        config_lib.GeneratorConfig(scale=4, architecture="compact", growth=4)
    with pytest.raises(ValueError, match="architecture must be one of"):
        config_lib.GeneratorConfig(scale=4, architecture="edsr")
    with pytest.raises(ValueError, match="growth must be >= 1"):
        config_lib.GeneratorConfig(scale=4, architecture="rrdb", growth=0)


def test_old_generator_json_loads_as_srresnet_and_new_one_round_trips(tmp_path):
    old = tmp_path / "old"
    old.mkdir()
    (old / generator_store.CONFIG_FILENAME).write_text(
        json.dumps({"scale": 4, "num_blocks": 2, "channels": 8, "bicubic_skip": True})
    )
    config = generator_store.read_config(str(old))
    expected = config_lib.GeneratorConfig(scale=4, num_blocks=2, channels=8, bicubic_skip=True)
    assert config == expected
    assert (config.architecture, config.growth) == ("srresnet", None)
    generator_store.write_config(str(old), config)  # the same generator: accepted

    new = config_lib.GeneratorConfig(
        scale=3, architecture="rrdb", num_blocks=1, channels=8, growth=4
    )
    generator_store.write_config(str(tmp_path / "new"), new)
    assert generator_store.read_config(str(tmp_path / "new")) == new
    with pytest.raises(ValueError, match="holds a generator built as"):
        generator_store.write_config(str(tmp_path / "new"), config_lib.GeneratorConfig(scale=3))


@pytest.mark.parametrize("side", [32, 27])
def test_unet_discriminator_gives_per_pixel_logits_at_any_patch_size(side):
    discriminator = models.unet_discriminator(base_channels=4)
    logits = discriminator(tf.zeros([2, side, side + 6, 3]), training=False)
    assert logits.shape == (2, side, side + 6, 1) and logits.dtype == tf.float32
    convs = [layer for layer in discriminator.layers if isinstance(layer, keras.layers.Conv2D)]
    spectral = [layer for layer in convs if isinstance(layer, models.SpectralNormConv2D)]
    plain = [layer for layer in convs if layer not in spectral]
    assert len(spectral) == 8 and len(plain) == 2  # all but the first and the last (BasicSR)


def test_receptive_radius_of_the_generators():
    radius = generator_store.receptive_radius
    assert radius(config_lib.GeneratorConfig(scale=4, architecture="compact")) == 18
    rrdb = config_lib.GeneratorConfig(scale=4, architecture="rrdb")
    assert radius(rrdb) == pytest.approx(347 + 0.5 + 0.25 + 0.5)
