"""The TF-free Example encoder writes what schema.to_example writes."""

import numpy as np
import tensorflow as tf

from data_prep import example_codec, schema
from tests import fixtures


def test_serialize_equals_to_example_and_parses():
    record = fixtures.pair_record("img_001_y00480", fixtures.make_image(24, 40, seed=3), scale=4)
    ours = example_codec.serialize(record)
    assert tf.train.Example.FromString(ours) == schema.to_example(record)
    parsed = schema.parse_example(tf.constant(ours))
    assert parsed["key"].numpy() == b"img_001_y00480" and parsed["lr/width"].numpy() == 10
    np.testing.assert_array_equal(
        tf.io.decode_png(parsed["hr/encoded"]).numpy(), fixtures.make_image(24, 40, seed=3)
    )


def test_large_and_negative_ints_round_trip():
    for value in (0, 127, 128, 300, 2**40, -1, -(2**63)):
        serialized = example_codec._field(3, example_codec._field(1, example_codec._varint(value)))
        feature = tf.train.Feature.FromString(serialized)
        assert list(feature.int64_list.value) == [value]


def test_hr_only_record_has_no_lr_features():
    hr = fixtures.make_image(24, 40, seed=4)
    record = schema.PairRecord("k", 4, None, None, None, fixtures.png_bytes(hr), 24, 40)
    ours = example_codec.serialize(record)
    assert tf.train.Example.FromString(ours) == schema.to_example(record)
    assert set(tf.train.Example.FromString(ours).features.feature) == {
        "key",
        "scale",
        "hr/encoded",
        "hr/height",
        "hr/width",
        "hr/channels",
    }
    parsed = schema.parse_example(tf.constant(ours), paired=False)
    np.testing.assert_array_equal(tf.io.decode_png(parsed["hr/encoded"]).numpy(), hr)
    assert record.lr_size() == (6, 10)
