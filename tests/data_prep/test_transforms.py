"""Each labelled transform of the job on a TestPipeline (in-process DirectRunner)."""

import os

import apache_beam as beam
import numpy as np
import pytest
import tensorflow as tf
from apache_beam.testing import test_pipeline
from apache_beam.testing.util import assert_that, equal_to, is_empty

from data_prep import images, schema, transforms
from tests import fixtures
from tests.data_prep import image_files

_CONFIG = images.PairConfig(scale=4, min_lr_size=4)


def _pipeline():
    return test_pipeline.TestPipeline(
        options=beam.options.pipeline_options.PipelineOptions(
            ["--direct_num_workers=1", "--direct_running_mode=in_memory"]
        )
    )


def _reasons(rejected):
    return rejected | beam.Map(lambda d: (os.path.basename(d["path"]), d["key"], d["reason"]))


def test_match_pairs_routes_unmatched_and_duplicates_to_dead_letter():
    hr = ["/d/0001.png", "/d/0002.png", "/d/img_7_SRF_4_HR.png", "/d/a/0003.png", "/d/b/0003.png"]
    lr = ["/d/0001x4.png", "/d/img_7_SRF_4_LR.png", "/d/0009x4.png", "/d/0003x4.png"]
    with _pipeline() as p:
        pairs, rejected = {
            "hr": p | "HR" >> beam.Create(hr),
            "lr": p | "LR" >> beam.Create(lr),
        } | transforms.MatchPairs(scale=4)
        assert_that(
            pairs,
            equal_to(
                [
                    ("0001", "/d/0001.png", "/d/0001x4.png"),
                    ("img_7", "/d/img_7_SRF_4_HR.png", "/d/img_7_SRF_4_LR.png"),
                ]
            ),
        )
        duplicate = "duplicate key: 2 HR and 1 LR files share it"
        assert_that(
            _reasons(rejected),
            equal_to(
                [
                    ("0002.png", "0002", "HR image has no LR partner"),
                    ("0009x4.png", "0009", "LR image has no HR partner"),
                    ("0003.png", "0003", duplicate),
                    ("0003.png", "0003", duplicate),
                    ("0003x4.png", "0003", duplicate),
                ]
            ),
            label="CheckRejected",
        )


def test_match_pairs_hr_only_and_key_regex():
    hr = ["/d/cat.png", "/d/dog.png", "/d/x/dog.png", "/d/README", "/d/bird.PNG", "/d/bird.txt"]
    with _pipeline() as p:
        pairs, rejected = {"hr": p | beam.Create(hr)} | transforms.MatchPairs(
            scale=4, hr_regex=r"^(?P<key>\w+)\.(png|PNG)$"
        )
        assert_that(pairs, equal_to([("cat", "/d/cat.png", None), ("bird", "/d/bird.PNG", None)]))
        not_image = f"not an image file name (expected one of {', '.join(images.IMAGE_EXTENSIONS)})"
        duplicate = "duplicate key: 2 HR and 0 LR files share it"
        assert_that(
            rejected | beam.Map(lambda d: (os.path.basename(d["path"]), d["reason"])),
            equal_to(
                [
                    ("dog.png", duplicate),
                    ("dog.png", duplicate),
                    ("README", not_image),
                    ("bird.txt", not_image),
                ]
            ),
            label="CheckRejected",
        )


def _write(directory, name, data):
    path = os.path.join(directory, name)
    with open(path, "wb") as f:
        f.write(data)
    return path


def _symlink(directory, name, target):
    path = os.path.join(directory, name)
    os.symlink(target, path)
    return path


def test_decode_and_validate_routes_each_bad_input(tmp_path):
    d = str(tmp_path)
    hr = fixtures.make_image(32, 48, seed=5)
    good = _write(d, "good.png", fixtures.png_bytes(hr))
    cases = {
        "empty": (_write(d, "empty.png", b""), None, "empty file"),
        "text": (_write(d, "text.png", b"hello"), None, "not a readable image"),
        "trunc": (
            _write(d, "trunc.png", image_files.truncated_png(fixtures.make_image(64, 64))),
            None,
            "truncated",
        ),
        "bomb": (_write(d, "bomb.png", image_files.bomb_png()), None, "decompression bomb"),
        "tiny": (_write(d, "tiny.png", fixtures.png_bytes(hr[:8, :8])), None, "min_lr_size"),
        "mismatch": (
            good,
            _write(d, "mismatch_lr.png", fixtures.png_bytes(hr[:7, :12])),
            "LR is 12x7",
        ),
        "missing": (os.path.join(d, "gone.png"), None, "unreadable: No such file"),
        "dangling": (_symlink(d, "dangling.png", "nowhere.png"), None, "unreadable: dangling"),
        "loop": (_symlink(d, "loop.png", "loop.png"), None, "unreadable: symlink loop"),
    }
    elements = [("good", good, None)] + [(k, h, lr) for k, (h, lr, _) in cases.items()]
    with _pipeline() as p:
        records, rejected = p | beam.Create(elements) | transforms.DecodeAndValidate(_CONFIG)
        assert_that(
            records | beam.Map(lambda s: (s.key, s.records[0].lr_height, s.records[0].lr_width)),
            equal_to([("good", 8, 12)]),
        )
        reasons = rejected | beam.Map(
            lambda d: (d["key"], os.path.basename(d["path"]), d["reason"])
        )

        def check(found):
            assert sorted(k for k, _, _ in found) == sorted(cases)
            for key, name, reason in found:
                path, lr_path, words = cases[key]
                assert name == os.path.basename(lr_path or path)
                assert words in reason, (key, reason)

        assert_that(reasons, check, label="CheckRejected")


def test_drop_duplicates_keeps_one_pair_per_pixel_content(tmp_path):
    """Equal pixels under other names and encodings (PNG, BMP) are one pair; the pair with the
    smallest path stays and the others name it. Equal HR with another LR is a different pair
    but shares the HR digest (and so the split)."""
    d = str(tmp_path)
    hr, other = fixtures.make_image(32, 32, seed=1), fixtures.make_image(32, 32, seed=2)
    lr = fixtures.downscale(hr, 4)
    elements = [
        ("b", _write(d, "b.png", fixtures.png_bytes(hr)), None),
        ("a", _write(d, "a.bmp", image_files.encoded(hr, fmt="BMP")), None),
        ("c", _write(d, "c.png", fixtures.png_bytes(hr)), None),
        ("o", _write(d, "o.png", fixtures.png_bytes(other)), None),
        ("p", _write(d, "p.png", fixtures.png_bytes(hr)), _write(d, "p_lr.png", _png(lr))),
        ("q", _write(d, "q.png", fixtures.png_bytes(hr)), _write(d, "q_lr.png", _png(lr))),
        ("r", _write(d, "r.png", fixtures.png_bytes(hr)), _write(d, "r_lr.png", _png(lr + 1))),
    ]
    with _pipeline() as p:
        decoded, invalid = p | beam.Create(elements) | transforms.DecodeAndValidate(_CONFIG)
        kept, duplicates = decoded | transforms.DropDuplicates()
        assert_that(invalid, is_empty(), label="NoInvalid")
        assert_that(
            kept | beam.Map(lambda s: (s.key, s.hr_digest)),
            equal_to(
                [
                    ("a", images.pixel_digest(hr)),
                    ("o", images.pixel_digest(other)),
                    ("p", images.pixel_digest(hr)),
                    ("r", images.pixel_digest(hr)),
                ]
            ),
        )
        assert_that(
            _reasons(duplicates),
            equal_to(
                [
                    ("b.png", "b", f"duplicate_of: {d}/a.bmp"),
                    ("c.png", "c", f"duplicate_of: {d}/a.bmp"),
                    ("q.png", "q", f"duplicate_of: {d}/p.png"),
                ]
            ),
            label="CheckDuplicates",
        )


def _png(pixels):
    return fixtures.png_bytes(pixels.astype(np.uint8))


def test_to_example_round_trips_through_schema():
    record = fixtures.pair_record("k", fixtures.make_image(16, 16, seed=6), scale=4)
    with _pipeline() as p:
        examples = p | beam.Create([record]) | transforms.ToExample("train")

        def check(found):
            (serialized,) = found
            parsed = schema.parse_example(tf.constant(serialized))
            assert parsed["key"].numpy() == b"k" and parsed["hr/height"].numpy() == 16
            np.testing.assert_array_equal(
                tf.io.decode_png(parsed["lr/encoded"]).numpy(),
                fixtures.downscale(fixtures.make_image(16, 16, 6), 4),
            )

        assert_that(examples, check)


def test_write_shards_names_and_empty_split(tmp_path):
    with _pipeline() as p:
        examples = p | beam.Create([b"a", b"b", b"c"])
        examples | "Write" >> transforms.WriteShards(str(tmp_path), "train", 2, compressed=True)
        empty = p | "Empty" >> beam.Create([]) | beam.Map(bytes)
        assert_that(empty, is_empty())
        empty | "WriteEmpty" >> transforms.WriteShards(str(tmp_path), "validation", 1, False)
    names = sorted(os.listdir(tmp_path))
    assert names == [
        schema.shard_name("train", 0, 2, True),
        schema.shard_name("train", 1, 2, True),
        schema.shard_name("validation", 0, 1),
    ]
    files = [os.path.join(tmp_path, n) for n in names[:2]]
    read = tf.data.TFRecordDataset(files, compression_type="GZIP")
    assert sorted(x.numpy() for x in read) == [b"a", b"b", b"c"]


@pytest.mark.parametrize("fraction", [0.0, 0.3, 1.0])
def test_split_is_stable_and_roughly_proportional(fraction):
    keys = [f"img_{i:04d}" for i in range(2000)]
    first = [transforms.split_of(k, fraction) for k in keys]
    assert first == [transforms.split_of(k, fraction) for k in keys]
    share = first.count(schema.VALIDATION) / len(keys)
    assert abs(share - fraction) < 0.04
