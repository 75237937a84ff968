"""HR-only datasets (srgan-prepare --lr=none) in trainer.input_pipeline: the HR-patch stream on
HR-only and paired data, the paired reader's refusal, bicubic validation pairs, schema versions.

Datasets are written with data_prep.schema directly (tests/fixtures style, no Beam); the Beam
job's --lr=none output is checked in tests/data_prep/test_build_tfrecords.py.
"""

import json
import os

import numpy as np
import pytest
import tensorflow as tf

from data_prep import schema
from tests import fixtures
from trainer import config as config_lib
from trainer import input_pipeline, value_range

SCALE = 4


def coded_hr(height, width, image_id):
    """HR whose pixel (r, c) is (r, c, image_id): every patch says where it was cut from."""
    rows, cols = np.meshgrid(np.arange(height), np.arange(width), indexing="ij")
    return np.stack([rows, cols, np.full_like(rows, image_id)], -1).astype(np.uint8)


def hr_only_record(key, hr):
    return schema.PairRecord(
        key=key,
        scale=SCALE,
        lr_png=None,
        lr_height=None,
        lr_width=None,
        hr_png=fixtures.png_bytes(hr),
        hr_height=hr.shape[0],
        hr_width=hr.shape[1],
    )


def write_hr_only(out_dir, splits, num_shards=2):
    """An HR-only dataset directory: split -> [(key, hr)], records dealt round-robin."""
    os.makedirs(out_dir, exist_ok=True)
    infos = {}
    for split, items in splits.items():
        names = [schema.shard_name(split, i, num_shards) for i in range(num_shards)]
        writers = [tf.io.TFRecordWriter(os.path.join(out_dir, n)) for n in names]
        for i, (key, hr) in enumerate(items):
            example = schema.to_example(hr_only_record(key, hr))
            writers[i % num_shards].write(example.SerializeToString())
        for writer in writers:
            writer.close()
        infos[split] = schema.SplitInfo(
            num_examples=len(items),
            files=tuple(names),
            min_lr_height=min(hr.shape[0] for _, hr in items) // SCALE,
            min_lr_width=min(hr.shape[1] for _, hr in items) // SCALE,
        )
    manifest = schema.Manifest(
        scale=SCALE,
        compressed=False,
        num_inputs=0,
        num_rejected=0,
        splits=infos,
        lr_kind=schema.LR_NONE,
    )
    with open(schema.manifest_path(out_dir), "w") as f:
        f.write(manifest.to_json())


@pytest.fixture(name="hr_only_dir")
def fixture_hr_only_dir(tmp_path):
    items = [(f"img{i}", coded_hr(40 + 4 * i, 48, i)) for i in range(6)]
    write_hr_only(str(tmp_path), {"train": items, "validation": items[:2]})
    return str(tmp_path)


def hr_stream(data_dir, seed=None, input_context=None, **fields):
    """make_hr_train_dataset of a freshly opened data_dir (a small shuffle buffer: fast start)."""
    source = input_pipeline.open_dataset(data_dir)
    config = config_lib.InputConfig(**{"shuffle_buffer": 16, **fields})
    return input_pipeline.make_hr_train_dataset(source, config, seed, input_context)


def patch_origin(patch):
    """(image id, top, left, symmetry key) of a coded patch; asserts it is one whole crop."""
    rows, cols, ids = (patch[..., k].astype(int) for k in range(3))
    assert len(np.unique(ids)) == 1  # one image per patch
    size = patch.shape[0]
    assert rows.max() - rows.min() == cols.max() - cols.min() == size - 1
    covered = set(zip(rows.ravel().tolist(), cols.ravel().tolist(), strict=True))
    assert len(covered) == size * size  # every pixel of the square once: a flip/rotation of it
    orientation = (rows[0, 0] == rows[0, 1], rows[-1, -1] > rows[0, 0], cols[-1, -1] > cols[0, 0])
    return int(ids[0, 0]), int(rows.min()), int(cols.min()), orientation


def to_uint8(hr_unit):
    return tf.cast(tf.round(hr_unit * 255.0), tf.uint8).numpy()


def test_hr_stream_yields_whole_augmented_crops_in_unit_range(hr_only_dir):
    dataset = hr_stream(
        hr_only_dir, seed=0, hr_patch_size=16, global_batch_size=8, crops_per_image=4
    )
    origins, orientations = set(), set()
    for hr in dataset.take(8):
        assert hr.shape == (8, 16, 16, 3) and hr.dtype == tf.float32
        assert 0.0 <= tf.reduce_min(hr) and tf.reduce_max(hr) <= 1.0
        for patch in to_uint8(hr):
            image_id, top, left, orientation = patch_origin(patch)
            assert top + 16 <= 40 + 4 * image_id and left + 16 <= 48
            origins.add((image_id, top, left))
            orientations.add(orientation)
    assert len(orientations) == 8  # all flips / rotations occur
    assert len(origins) > 40 and {o[0] for o in origins} == set(range(6))
    # Off the LR grid too: HR-only crops are not tied to multiples of the scale.
    assert any(top % SCALE for _, top, _ in origins)


def test_hr_stream_is_reproducible_with_a_seed(hr_only_dir):
    def batches(seed):
        dataset = hr_stream(
            hr_only_dir, seed, hr_patch_size=16, global_batch_size=4, crops_per_image=2
        )
        return [hr.numpy() for hr in dataset.take(2)]

    for a, b in zip(batches(3), batches(3), strict=True):
        np.testing.assert_array_equal(a, b)
    assert any(not np.array_equal(a, b) for a, b in zip(batches(3), batches(4), strict=True))


def test_hr_stream_input_pipelines_read_disjoint_images(tmp_path):
    """File sharding as in make_train_dataset (element sharding is tested there, shared code)."""
    items = [(f"img{i}", coded_hr(32, 32, i)) for i in range(6)]
    write_hr_only(str(tmp_path), {"train": items})

    def ids(pipeline_id):
        context = tf.distribute.InputContext(num_input_pipelines=2, input_pipeline_id=pipeline_id)
        dataset = hr_stream(
            str(tmp_path), 1, context, hr_patch_size=16, global_batch_size=4, crops_per_image=2
        )
        return {int(i) for hr in dataset.take(5) for i in to_uint8(hr)[..., 2].ravel()}

    assert ids(0) == {0, 2, 4} and ids(1) == {1, 3, 5}


def test_hr_stream_reads_paired_data_as_its_hr(tmp_path):
    hrs = [coded_hr(32, 36, i) for i in range(3)]
    fixtures.write_dataset(str(tmp_path), {"train": [(f"p{i}", hr) for i, hr in enumerate(hrs)]})
    dataset = hr_stream(
        str(tmp_path), seed=0, hr_patch_size=16, global_batch_size=6, crops_per_image=2
    )
    for hr in dataset.take(3):
        assert hr.shape == (6, 16, 16, 3)
        for patch in to_uint8(hr):
            patch_origin(patch)  # whole crops of the stored HR images


def test_paired_reader_refuses_hr_only_data_naming_the_flags(hr_only_dir):
    source = input_pipeline.open_dataset(hr_only_dir)
    assert not source.paired and source.manifest.lr_kind == schema.LR_NONE
    config = config_lib.InputConfig(hr_patch_size=16, global_batch_size=2)
    with pytest.raises(ValueError, match=r"HR-only shards.*--lr=none.*--degradation=realesrgan"):
        input_pipeline.make_train_dataset(source, config)
    with pytest.raises(ValueError, match="HR-only"):
        input_pipeline.train_dataset_fn(source, config)(tf.distribute.InputContext())
    with pytest.raises(ValueError, match="larger than the smallest image"):
        hr_stream(hr_only_dir, hr_patch_size=44, global_batch_size=2)  # HR 44 > 40
    with pytest.raises(ValueError, match="multiple of the dataset's scale 4"):
        hr_stream(hr_only_dir, hr_patch_size=18, global_batch_size=2)


def test_hr_only_validation_pairs_equal_the_paired_datasets(tmp_path):
    """The LR synthesised for HR-only validation is the Beam job's bicubic, pixel for pixel."""
    hrs = [(f"v{i}", fixtures.make_image(32 + 4 * i, 40, seed=i)) for i in range(2)]
    write_hr_only(str(tmp_path / "hr_only"), {"validation": hrs})
    fixtures.write_dataset(str(tmp_path / "paired"), {"validation": hrs})

    def examples(name, **kwargs):
        source = input_pipeline.open_dataset(str(tmp_path / name))
        return list(input_pipeline.make_validation_dataset(source, **kwargs))

    for kwargs in ({}, {"hr_crop_size": 16, "batch_size": 2}):
        hr_only, paired = examples("hr_only", **kwargs), examples("paired", **kwargs)
        assert len(hr_only) == len(paired) == (2 if not kwargs else 1)
        for a, b in zip(hr_only, paired, strict=True):
            assert a["lr"].dtype == tf.uint8
            for name in ("key", "lr", "hr"):
                np.testing.assert_array_equal(a[name], b[name])


def test_hr_only_corrupt_record_is_an_error_naming_its_shard(tmp_path):
    items = [(f"img{i}", coded_hr(32, 32, i)) for i in range(2)]
    write_hr_only(str(tmp_path), {"train": items + [("odd", coded_hr(33, 32, 9))]})
    with pytest.raises(
        tf.errors.InvalidArgumentError, match=r"Corrupt record(.|\n)*train-00000-of-00002"
    ):
        for _ in hr_stream(str(tmp_path), 0, hr_patch_size=16, global_batch_size=2).take(20):
            pass


def _rewrite_manifest(data_dir, edit):
    path = schema.manifest_path(data_dir)
    with open(path) as f:
        data = json.load(f)
    edit(data)
    with open(path, "w") as f:
        json.dump(data, f)


def test_version_1_manifest_reads_as_paired_and_unknown_versions_are_refused(tmp_path):
    data_dir = str(tmp_path)
    items = [(f"k{i}", fixtures.make_image(32, 32, seed=i)) for i in range(2)]
    fixtures.write_dataset(data_dir, {"train": items})

    def version_1(data):  # exactly what the version-1 writer wrote: no lr_kind
        data.pop("lr_kind")
        data.update(schema_version=1, args={"lr_glob": "lr/*.png"})

    _rewrite_manifest(data_dir, version_1)
    source = input_pipeline.open_dataset(data_dir)
    assert source.manifest.schema_version == 1 and source.manifest.lr_kind == schema.LR_FILES
    config = config_lib.InputConfig(
        hr_patch_size=16, global_batch_size=2, crops_per_image=1, shuffle_buffer=4
    )
    lr, hr = next(iter(input_pipeline.make_train_dataset(source, config)))
    assert lr.shape == (2, 4, 4, 3) and hr.shape == (2, 16, 16, 3)
    _rewrite_manifest(data_dir, lambda data: data.update(args={}))
    assert input_pipeline.open_dataset(data_dir).manifest.lr_kind == schema.LR_BICUBIC

    _rewrite_manifest(data_dir, lambda data: data.update(schema_version=3))
    with pytest.raises(ValueError, match="schema version 3, this code reads versions 1, 2"):
        input_pipeline.open_dataset(data_dir)
    _rewrite_manifest(data_dir, lambda data: data.update(schema_version=2))
    with pytest.raises(ValueError, match="malformed manifest.*has no lr_kind"):
        input_pipeline.open_dataset(data_dir)
    _rewrite_manifest(data_dir, lambda data: data.update(lr_kind="jpeg"))
    with pytest.raises(ValueError, match="lr_kind must be one of"):
        input_pipeline.open_dataset(data_dir)


def test_unit_range_converters_match_the_uint8_ones():
    pixels = tf.constant(np.arange(256, dtype=np.uint8).reshape(1, 16, 16, 1))
    unit = value_range.unit_from_uint8(pixels)
    np.testing.assert_array_equal(unit, value_range.lr_from_uint8(pixels))
    np.testing.assert_allclose(
        value_range.hr_from_unit(unit), value_range.hr_from_uint8(pixels), atol=1e-6
    )
    assert value_range.hr_from_unit(tf.constant([1.25])).numpy()[0] == 1.5  # not clipped
