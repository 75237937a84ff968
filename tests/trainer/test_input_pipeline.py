"""trainer.input_pipeline on tiny real TFRecord datasets (tests/fixtures style, no Beam)."""

import os

import numpy as np
import pytest
import tensorflow as tf

from data_prep import schema
from tests import fixtures
from trainer import config as config_lib
from trainer import input_pipeline, value_range

SCALE = 4


def block_coded_hr(lr_height, lr_width, image_id):
    """HR made of SCALE x SCALE constant blocks whose colour encodes (block row, column, image).

    Its exact LR is one pixel per block, so an aligned pair satisfies hr == repeat(lr) and any
    offset between the LR and HR crops changes colours.
    """
    rows, cols = np.meshgrid(np.arange(lr_height), np.arange(lr_width), indexing="ij")
    lr = np.stack([rows * 8, cols * 8, np.full_like(rows, image_id * 10)], -1).astype(np.uint8)
    return lr, lr.repeat(SCALE, 0).repeat(SCALE, 1)


def write_pairs(out_dir, splits, num_shards=2, extra_records=()):
    """Like fixtures.write_dataset, but with given LR images: split -> [(key, lr, hr)].

    extra_records: (split, shard index, serialized record) appended as-is (e.g. corrupt ones).
    """
    os.makedirs(out_dir, exist_ok=True)
    infos = {}
    for split, items in splits.items():
        names = [schema.shard_name(split, i, num_shards) for i in range(num_shards)]
        writers = [tf.io.TFRecordWriter(os.path.join(out_dir, n)) for n in names]
        for i, (key, lr, hr) in enumerate(items):
            record = fixtures.pair_record(key, hr, SCALE, lr=lr)
            writers[i % num_shards].write(schema.to_example(record).SerializeToString())
        for extra_split, shard, serialized in extra_records:
            if extra_split == split:
                writers[shard].write(serialized)
        for writer in writers:
            writer.close()
        infos[split] = schema.SplitInfo(
            num_examples=len(items),
            files=tuple(names),
            min_lr_height=min(lr.shape[0] for _, lr, _ in items),
            min_lr_width=min(lr.shape[1] for _, lr, _ in items),
        )
    manifest = schema.Manifest(
        scale=SCALE, compressed=False, num_inputs=0, num_rejected=0, splits=infos
    )
    with open(schema.manifest_path(out_dir), "w") as f:
        f.write(manifest.to_json())


@pytest.fixture(name="coded_dir")
def fixture_coded_dir(tmp_path):
    items = [(f"img{i}", *block_coded_hr(12 + i, 16, i)) for i in range(6)]
    write_pairs(str(tmp_path), {"train": items, "validation": items[:3]})
    return str(tmp_path)


def to_uint8(lr, hr):
    lr = tf.cast(tf.round(lr * 255.0), tf.uint8).numpy()
    return lr, value_range.hr_to_uint8(hr).numpy()


def orientation(lr_patch):
    """Which of the 8 square symmetries maps (row, column) coding to this patch."""
    rows, cols = lr_patch[..., 0].astype(int), lr_patch[..., 1].astype(int)
    rows_vary_down = rows[-1, 0] != rows[0, 0]
    return rows_vary_down, rows[-1, -1] > rows[0, 0], cols[-1, -1] > cols[0, 0]


def train_stream(data_dir, seed=None, input_context=None, corrupt_counter=None, **fields):
    """make_train_dataset of a freshly opened data_dir with an InputConfig of `fields`."""
    source = input_pipeline.open_dataset(data_dir)
    config = config_lib.InputConfig(**fields)
    return input_pipeline.make_train_dataset(source, config, seed, input_context, corrupt_counter)


@pytest.mark.parametrize("cache", [False, True])
def test_train_patches_are_exactly_aligned_under_augmentation(coded_dir, cache):
    dataset = train_stream(
        coded_dir,
        seed=0,
        hr_patch_size=16,
        global_batch_size=8,
        crops_per_image=4,
        shuffle_buffer=32,
        cache_decoded_images=cache,
    )
    orientations, origins = set(), set()
    for lr, hr in dataset.take(20):
        assert lr.shape == (8, 4, 4, 3) and hr.shape == (8, 16, 16, 3)
        assert lr.dtype == hr.dtype == tf.float32
        assert 0.0 <= tf.reduce_min(lr) and tf.reduce_max(lr) <= 1.0
        assert -1.0 <= tf.reduce_min(hr) and tf.reduce_max(hr) <= 1.0
        lr, hr = to_uint8(lr, hr)
        np.testing.assert_array_equal(hr, lr.repeat(SCALE, 1).repeat(SCALE, 2))
        for patch in lr:
            orientations.add(orientation(patch))
            origins.add((patch[..., 0].min(), patch[..., 1].min(), patch[0, 0, 2]))
    assert len(orientations) == 8  # all flips / rotations occur
    assert len(origins) > 50  # crops land in many places of many images


def test_seed_makes_stream_reproducible(coded_dir):
    def first_batches(seed):
        dataset = train_stream(
            coded_dir,
            seed=seed,
            hr_patch_size=16,
            global_batch_size=4,
            crops_per_image=2,
            shuffle_buffer=8,
        )
        return [hr.numpy() for _, hr in dataset.take(5)]

    for a, b in zip(first_batches(7), first_batches(7), strict=True):
        np.testing.assert_array_equal(a, b)
    assert any(
        not np.array_equal(a, b) for a, b in zip(first_batches(7), first_batches(8), strict=True)
    )


def test_per_replica_batches_add_up_under_mirrored_strategy(coded_dir):
    strategy = tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"])
    config = config_lib.InputConfig(
        hr_patch_size=16, global_batch_size=6, crops_per_image=2, shuffle_buffer=8
    )
    source = input_pipeline.open_dataset(coded_dir)
    dist = strategy.distribute_datasets_from_function(
        input_pipeline.train_dataset_fn(source, config)
    )
    lr, hr = next(iter(dist))
    lr_parts = strategy.experimental_local_results(lr)
    hr_parts = strategy.experimental_local_results(hr)
    assert [part.shape[0] for part in lr_parts] == [3, 3]
    assert [part.shape[0] for part in hr_parts] == [3, 3]
    assert sum(part.shape[0] for part in lr_parts) == config.global_batch_size


def image_ids(data_dir, num_pipelines, pipeline_id, batches=5):
    """The image ids (coded in the blue channel) one input pipeline's patches come from."""
    context = tf.distribute.InputContext(
        num_input_pipelines=num_pipelines, input_pipeline_id=pipeline_id
    )
    dataset = train_stream(
        data_dir,
        seed=1,
        input_context=context,
        hr_patch_size=16,
        global_batch_size=4,
        crops_per_image=2,
        shuffle_buffer=8,
    )
    blue = np.concatenate([to_uint8(lr, hr)[0][..., 2].ravel() for lr, hr in dataset.take(batches)])
    return set((blue // 10).tolist())


@pytest.mark.parametrize("num_shards", [2, 1])  # 1 shard < 2 pipelines: element sharding
def test_input_pipelines_read_disjoint_examples(tmp_path, num_shards):
    items = [(f"img{i}", *block_coded_hr(12, 16, i)) for i in range(6)]
    write_pairs(str(tmp_path), {"train": items}, num_shards=num_shards)
    first, second = image_ids(str(tmp_path), 2, 0), image_ids(str(tmp_path), 2, 1)
    assert first == {0, 2, 4} and second == {1, 3, 5}


def test_validation_sees_every_example_once_full_and_cropped(tmp_path):
    hrs = [fixtures.make_image(32 + 4 * i, 40, seed=i) for i in range(5)]
    fixtures.write_dataset(
        str(tmp_path), {"validation": [(f"v{i}", hr) for i, hr in enumerate(hrs)]}
    )
    source = input_pipeline.open_dataset(str(tmp_path))
    full = list(input_pipeline.make_validation_dataset(source))
    assert sorted(e["key"][0].numpy().decode() for e in full) == [f"v{i}" for i in range(5)]
    for element in full:
        i = int(element["key"][0].numpy().decode()[1:])
        assert element["lr"].dtype == element["hr"].dtype == tf.uint8  # consumers convert once
        np.testing.assert_array_equal(element["hr"][0], hrs[i])
        np.testing.assert_array_equal(element["lr"][0], fixtures.downscale(hrs[i], 4))
    again = [e["key"][0].numpy() for e in input_pipeline.make_validation_dataset(source)]
    assert again == [e["key"][0].numpy() for e in full]  # deterministic order

    cropped = list(input_pipeline.make_validation_dataset(source, hr_crop_size=16, batch_size=2))
    assert [e["key"].shape[0] for e in cropped] == [2, 2, 1]
    for element in cropped:
        assert element["lr"].shape[1:] == (4, 4, 3) and element["hr"].shape[1:] == (16, 16, 3)
    lr_first, hr_first = cropped[0]["lr"][0], cropped[0]["hr"][0]
    key = cropped[0]["key"][0].numpy().decode()
    hr = hrs[int(key[1:])]
    top, left = ((hr.shape[0] // 4 - 4) // 2) * 4, ((hr.shape[1] // 4 - 4) // 2) * 4
    np.testing.assert_array_equal(hr_first, hr[top : top + 16, left : left + 16])
    assert lr_first.shape == (4, 4, 3)


def test_open_dataset_refuses_what_it_cannot_serve(tmp_path, coded_dir):
    with pytest.raises(FileNotFoundError, match="has no manifest.json"):
        input_pipeline.open_dataset(str(tmp_path / "nothing"))
    source = input_pipeline.open_dataset(coded_dir)
    with pytest.raises(ValueError, match="larger than the smallest image"):
        input_pipeline.check_split(source, "train", hr_patch_size=52)  # LR 13 > 12
    with pytest.raises(ValueError, match="multiple of the dataset's scale 4"):
        input_pipeline.check_split(source, "train", hr_patch_size=18)
    with pytest.raises(ValueError, match="no split 'test'"):
        input_pipeline.check_split(source, "test")
    with pytest.raises(ValueError, match="batch_size must be 1"):
        input_pipeline.make_validation_dataset(source, batch_size=2)
    with pytest.raises(ValueError, match="crops_per_image must be >= 1"):
        config_lib.InputConfig(hr_patch_size=16, crops_per_image=0)
    with pytest.raises(ValueError, match="larger than the smallest image"):
        train_stream(coded_dir, hr_patch_size=52)
    input_pipeline.check_split(source, "train", hr_patch_size=48)  # LR 12 fits

    empty = str(tmp_path / "empty")
    fixtures.write_dataset(empty, {"train": [("a", fixtures.make_image(16, 16))], "validation": []})
    with pytest.raises(ValueError, match="split 'validation' is empty"):
        input_pipeline.make_validation_dataset(input_pipeline.open_dataset(empty))

    os.remove(os.path.join(coded_dir, schema.shard_name("train", 1, 2)))
    with pytest.raises(FileNotFoundError, match="names shard train-00001-of-00002.tfrecord"):
        input_pipeline.open_dataset(coded_dir)


def test_streams_use_the_opened_manifest_without_reading_it_again(coded_dir):
    source = input_pipeline.open_dataset(coded_dir)
    os.remove(schema.manifest_path(coded_dir))
    config = config_lib.InputConfig(16, 2, crops_per_image=2, shuffle_buffer=8)
    lr, hr = next(iter(input_pipeline.make_train_dataset(source, config)))
    assert lr.shape == (2, 4, 4, 3) and hr.shape == (2, 16, 16, 3)
    assert len(list(input_pipeline.make_validation_dataset(source))) == 3


def corrupt_dataset(out_dir, damage):
    """4 good pairs in 2 shards plus damage in shard 1: two bad records, or a cut-off file."""
    items = [(f"img{i}", *block_coded_hr(8, 8, i)) for i in range(4)]
    bad = schema.PairRecord(
        key="bad",
        scale=SCALE,
        lr_png=b"not a png",
        lr_height=8,
        lr_width=8,
        hr_png=b"\x89PNG truncated",
        hr_height=32,
        hr_width=32,
    )
    extra = [
        ("train", 1, schema.to_example(bad).SerializeToString()),
        ("train", 1, b"not an Example at all"),
    ]
    write_pairs(out_dir, {"train": items}, extra_records=extra if damage == "records" else ())
    if damage == "truncated":
        path = os.path.join(out_dir, schema.shard_name("train", 1, 2))
        with open(path, "rb") as f:
            data = f.read()
        with open(path, "wb") as f:
            f.write(data[: len(data) - 100])  # the second record loses its end


def corrupt_stream(data_dir, skip_corrupt=False, corrupt_counter=None):
    return train_stream(
        data_dir,
        seed=0,
        corrupt_counter=corrupt_counter,
        hr_patch_size=16,
        global_batch_size=2,
        crops_per_image=1,
        shuffle_buffer=2,
        skip_corrupt=skip_corrupt,
    )


@pytest.mark.parametrize("damage", ["records", "truncated"])
def test_corrupt_record_is_an_error_naming_its_shard(tmp_path, damage):
    corrupt_dataset(str(tmp_path), damage)
    with pytest.raises(
        tf.errors.InvalidArgumentError, match=r"Corrupt record(.|\n)*train-00001-of-00002\.tfrecord"
    ):
        for _ in corrupt_stream(str(tmp_path)).take(20):
            pass


@pytest.mark.parametrize("damage, bad_per_pass", [("records", 2), ("truncated", 1)])
def test_skip_corrupt_skips_and_counts(tmp_path, damage, bad_per_pass):
    corrupt_dataset(str(tmp_path), damage)
    counter = tf.Variable(0, dtype=tf.int64)
    # 20 batches of 2 one-crop pairs: 40 good records, i.e. at least 10 passes over the files.
    batches = list(corrupt_stream(str(tmp_path), True, counter).take(20))
    assert len(batches) == 20
    assert counter.numpy() >= bad_per_pass * 9  # on (nearly) every pass


def test_gzip_shards_are_read(tmp_path):
    items = [(f"k{i}", fixtures.make_image(32, 32, seed=i)) for i in range(3)]
    fixtures.write_dataset(str(tmp_path), {"train": items, "validation": items}, compressed=True)
    dataset = train_stream(
        str(tmp_path), hr_patch_size=16, global_batch_size=4, crops_per_image=2, shuffle_buffer=4
    )
    lr, hr = next(iter(dataset))
    assert lr.shape == (4, 4, 4, 3) and hr.shape == (4, 16, 16, 3)
    source = input_pipeline.open_dataset(str(tmp_path))
    assert len(list(input_pipeline.make_validation_dataset(source))) == 3
