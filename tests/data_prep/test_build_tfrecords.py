"""End to end: the job on synthetic images with every bad-input case, plus Set14_x4's real pairs.

Shards are read back with tf.data + schema.parse_example and compared pixel for pixel with the
sources. Most runs are in-process DirectRunner; one CLI run uses multi_processing like `make demo`.
"""

import contextlib
import json
import os
import pathlib
import re
import shutil
import subprocess
import sys

import numpy as np
import pytest
import tensorflow as tf
from apache_beam.options.pipeline_options import PipelineOptions
from PIL import Image

from data_prep import images, pipeline, schema, transforms
from tests import fixtures
from tests.data_prep import image_files

_REPO = pathlib.Path(__file__).resolve().parents[2]
_SET14 = fixtures.SHARED_DATA / "Set14_x4"
_IN_PROCESS = ["--direct_num_workers=1", "--direct_running_mode=in_memory"]
_WORKER_IMPORT_LINES = (
    "WARNING:root:apitools not found, and bigquery client libraries are not available despite "
    "the import not raising an ImportError.",
    "INFO:__main__:Logging handler created.",
)


def _save(path, data):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)


_DANGLING = object()  # an HR file that is a symlink to nothing


def _paired_inputs(root):
    """HR/LR folders: 3 good DIV2K pairs, Set14 (if present), and one of each bad case.

    The bad cases include what once vanished from the counts: a name with a backslash, a
    dangling HR symlink, and a byte-for-byte copy of a good pair under another key.
    """
    hr_dir, lr_dir = root / "hr", root / "lr"
    for i in range(3):
        hr = fixtures.make_image(64 + 4 * i, 80, seed=i)
        _save(hr_dir / f"{i:04d}.png", fixtures.png_bytes(hr))
        _save(lr_dir / f"{i:04d}x4.png", fixtures.png_bytes(fixtures.downscale(hr, 4)))
    hr = fixtures.make_image(64, 64, seed=9)
    lr_png = fixtures.png_bytes(fixtures.downscale(hr, 4))
    bad = {  # key -> (HR bytes or None, LR bytes or None, reason words)
        "b_empty": (b"", lr_png, "empty file"),
        "b_trunc": (image_files.truncated_png(hr), lr_png, "truncated"),
        "b_text": (b"<html>not an image</html>", lr_png, "not a readable image"),
        "b_mismatch": (fixtures.png_bytes(hr), fixtures.png_bytes(hr[:20, :16]), "LR is 16x20"),
        "b_hr_only": (fixtures.png_bytes(hr), None, "no LR partner"),
        "b_lr_only": (None, lr_png, "no HR partner"),
        "b_small": (
            fixtures.png_bytes(hr[:16, :16]),
            fixtures.png_bytes(hr[:4, :4]),
            "min_lr_size",
        ),
        "b_bomb": (image_files.bomb_png(), lr_png, "decompression bomb"),
        "b_back\\slash": (fixtures.png_bytes(hr), None, "no LR partner"),
        "b_dangling": (_DANGLING, lr_png, "unreadable: dangling symlink (-> gone.png)"),
        "b_copy": (
            (hr_dir / "0000.png").read_bytes(),
            (lr_dir / "0000x4.png").read_bytes(),
            f"duplicate_of: {hr_dir / '0000.png'}",
        ),
    }
    for key, (hr_bytes, lr_bytes, _) in bad.items():
        if hr_bytes is _DANGLING:
            os.symlink("gone.png", hr_dir / f"{key}.png")
        elif hr_bytes is not None:
            _save(hr_dir / f"{key}.png", hr_bytes)
        if lr_bytes is not None:
            _save(lr_dir / f"{key}x4.png", lr_bytes)
    _save(hr_dir / "b_dup.png", fixtures.png_bytes(hr))  # duplicate key: .png and .jpg
    _save(hr_dir / "b_dup.jpg", image_files.encoded(hr, fmt="JPEG"))
    _save(lr_dir / "b_dupx4.png", lr_png)
    if _SET14.is_dir():
        for path in _SET14.glob("*_HR.png"):
            shutil.copy(path, hr_dir / path.name)
        for path in _SET14.glob("*_LR.png"):
            shutil.copy(path, lr_dir / path.name)
    return bad


def _config(root, out, **kwargs):
    pair = images.PairConfig(
        scale=4,
        min_lr_size=kwargs.pop("min_lr_size", 8),
        hr_crop_size=kwargs.pop("hr_crop_size", None),
    )
    return pipeline.JobConfig(
        output_dir=str(out),
        pair=pair,
        **{"hr_glob": str(root / "hr" / "*"), "lr_glob": str(root / "lr" / "*"), **kwargs},
    )


def _read_split(out, manifest, split):
    files = schema.split_files(str(out), manifest, split)
    dataset = tf.data.TFRecordDataset(
        files, compression_type=schema.compression_type(manifest.compressed)
    ).map(schema.parse_example)
    return {e["key"].numpy().decode(): e for e in dataset}


def _rgb(path):
    return images.load_rgb(str(path))


def _rejected(out, manifest):
    lines = []
    for name in manifest.rejected_files:
        lines += [json.loads(line) for line in (out / name).read_text().splitlines()]
    return lines


def test_paired_job_keeps_every_input_accounted_for(tmp_path):
    bad = _paired_inputs(tmp_path / "in")
    out = tmp_path / "out"
    result = pipeline.run(
        _config(tmp_path / "in", out, val_fraction=0.3, num_shards=2, compressed=True),
        PipelineOptions(_IN_PROCESS),
    )
    manifest = schema.read_manifest(str(out))
    assert manifest == result.manifest
    examples = {**_read_split(out, manifest, "train"), **_read_split(out, manifest, "validation")}
    set14 = 14 if _SET14.is_dir() else 0
    assert len(examples) == 3 + set14
    rejected = _rejected(out, manifest)
    by_key = {}
    for line in rejected:
        by_key.setdefault(line["key"], []).append(line["reason"])
    for key, (_, _, words) in bad.items():
        assert len(by_key[key]) == 1 and words in by_key[key][0], (key, by_key[key])
    assert by_key["b_dup"] == ["duplicate key: 2 HR and 1 LR files share it"] * 3
    assert manifest.num_rejected == len(rejected) == len(bad) + 3
    assert manifest.num_duplicates == 1
    for split, info in manifest.splits.items():
        assert info.num_examples == len(_read_split(out, manifest, split))
    assert (
        manifest.num_inputs
        == sum(s.num_examples for s in manifest.splits.values()) + manifest.num_rejected
    )
    counters = result.counters  # Beam metrics tell the same story
    assert counters["hr_files"] == len(os.listdir(tmp_path / "in" / "hr"))
    assert counters["lr_files"] == len(os.listdir(tmp_path / "in" / "lr"))
    assert sum(v for k, v in counters.items() if k.startswith("rejected_")) == len(rejected)
    for split, info in manifest.splits.items():
        assert counters.get(f"examples_{split}", 0) == info.num_examples
    for key, example in examples.items():  # pixels equal the sources (Set14 003 is grayscale)
        if key.startswith("img_"):
            hr_path = tmp_path / "in" / "hr" / f"{key}_SRF_4_HR.png"
            lr_path = tmp_path / "in" / "lr" / f"{key}_SRF_4_LR.png"
        else:
            hr_path, lr_path = (
                tmp_path / "in" / "hr" / f"{key}.png",
                tmp_path / "in" / "lr" / f"{key}x4.png",
            )
        hr, lr = _rgb(hr_path), _rgb(lr_path)
        np.testing.assert_array_equal(
            tf.io.decode_png(example["hr/encoded"]).numpy(),
            hr[: lr.shape[0] * 4, : lr.shape[1] * 4],
        )
        np.testing.assert_array_equal(tf.io.decode_png(example["lr/encoded"]).numpy(), lr)
        assert example["lr/height"].numpy() == lr.shape[0]
    assert min(
        manifest.splits["train"].min_lr_height, manifest.splits["validation"].min_lr_height or 10**9
    ) == min(e["lr/height"].numpy() for e in examples.values())


def _hr_only_inputs(folder, count=4):
    for i in range(count):
        _save(folder / f"photo{i}.png", fixtures.png_bytes(fixtures.make_image(64, 96, i)))


def test_hr_only_tiles_split_by_source_and_overwrite(tmp_path):
    _hr_only_inputs(tmp_path / "in" / "hr")
    out = tmp_path / "out"
    config = _config(tmp_path / "in", out, lr_glob=None, hr_crop_size=32, val_fraction=0.5)
    result = pipeline.run(config, PipelineOptions(_IN_PROCESS))
    manifest = result.manifest
    assert result.num_source_pairs == 4
    assert manifest.num_inputs == 4 * 6 and manifest.num_rejected == 0  # 2x3 tiles per photo
    sources = {}
    for split in manifest.splits:
        keys = _read_split(out, manifest, split)
        sources[split] = {k.rsplit("_y", 1)[0] for k in keys}
        assert len(keys) == 6 * len(sources[split]) == manifest.splits[split].num_examples
        assert all(e["lr/height"].numpy() == 8 for e in keys.values())
    with pytest.raises(pipeline.JobInputError, match="--overwrite"):
        pipeline.run(config, PipelineOptions(_IN_PROCESS))
    rerun = pipeline.run(
        _config(tmp_path / "in", out, lr_glob=None, val_fraction=0.5, overwrite=True, num_shards=3),
        PipelineOptions(_IN_PROCESS),
    )
    assert rerun.manifest.num_inputs == 4
    assert sorted(os.listdir(out)) == sorted(
        [
            schema.MANIFEST_FILENAME,
            *rerun.manifest.rejected_files,
            *(f for s in rerun.manifest.splits.values() for f in s.files),
        ]
    )
    for split in manifest.splits:  # re-running never moves an image between splits
        assert set(_read_split(out, rerun.manifest, split)) == sources[split]


def test_hr_only_job_writes_no_lr_and_keeps_every_rule(tmp_path):
    """--lr=none: HR-only tiles + manifest (schema 2, lr_kind none); duplicates, too-small and
    unreadable photos are dead letters as in the paired job; the paired reader refuses it."""
    folder = tmp_path / "in" / "hr"
    _hr_only_inputs(folder, count=3)  # 64x96 each: 2x3 tiles of 32
    _save(folder / "copy.png", (folder / "photo1.png").read_bytes())
    _save(folder / "small.png", fixtures.png_bytes(fixtures.make_image(28, 96, 5)))  # LR 7 < 8
    _save(folder / "text.png", b"not an image")
    out = tmp_path / "out"
    pair = images.PairConfig(scale=4, min_lr_size=8, hr_crop_size=32, hr_only=True)
    config = pipeline.JobConfig(
        hr_glob=str(folder / "*"), output_dir=str(out), pair=pair, val_fraction=0.5
    )
    result = pipeline.run(config, PipelineOptions(_IN_PROCESS))
    manifest = schema.read_manifest(str(out))
    assert manifest == result.manifest
    assert manifest.schema_version == 2 and manifest.lr_kind == "none" and not manifest.paired
    assert manifest.num_rejected == 3 and manifest.num_duplicates == 1
    assert manifest.num_inputs == 3 * 6 + 3 and result.num_source_pairs == 3
    reasons = sorted(line["reason"].split(":")[0] for line in _rejected(out, manifest))
    small = "LR would be 24x7 (WxH), smaller than min_lr_size=8"
    assert reasons == [small, "duplicate_of", "not a readable image"]
    tiles = 0
    for split, info in manifest.splits.items():
        files = schema.split_files(str(out), manifest, split)
        for serialized in tf.data.TFRecordDataset(files):
            example = tf.train.Example.FromString(serialized.numpy())
            names = set(example.features.feature)
            assert names == set(schema.feature_table(paired=False))  # no lr/* features
            key = example.features.feature["key"].bytes_list.value[0].decode()
            source, y, x = re.fullmatch(r"(.+)_y(\d{5})_x(\d{5})", key).groups()
            y, x = int(y), int(x)
            hr = tf.io.decode_png(example.features.feature["hr/encoded"].bytes_list.value[0])
            np.testing.assert_array_equal(
                hr, _rgb(folder / f"{source}.png")[y : y + 32, x : x + 32]
            )
            tiles += 1
        assert info.num_examples == len(list(tf.data.TFRecordDataset(files)))
        assert info.min_lr_height in (0, 8)  # HR 32 / scale: the LR the trainer synthesises
    assert tiles == 3 * 6
    from trainer import config as config_lib  # the reader side, on this job's own output
    from trainer import input_pipeline

    source = input_pipeline.open_dataset(str(out))
    with pytest.raises(ValueError, match="HR-only shards"):
        input_pipeline.make_train_dataset(source, config_lib.InputConfig(hr_patch_size=32))
    with pytest.raises(ValueError, match="--lr=none writes HR-only shards, but --lr_glob"):
        pipeline.JobConfig(hr_glob="x", output_dir="y", pair=pair, lr_glob="z")


def _copies_inputs(folder, photos=9):
    """Each photo under 5 names: PNG, two PNG copies, a BMP (same pixels), a symlink; plus a
    distinct photo named with a backslash, a dangling and a looping symlink.

    Returns {photo index: the path kept for it (the smallest)}."""
    kept = {}
    for i in range(photos):
        pixels = fixtures.make_image(24, 24, seed=100 + i)
        _save(folder / f"bmp{i}.bmp", image_files.encoded(pixels, fmt="BMP"))
        for name in (f"photo{i}.png", f"copy{i}_a.png", f"copy{i}_b.png"):
            _save(folder / name, fixtures.png_bytes(pixels))
        os.symlink(f"photo{i}.png", folder / f"z_link{i}.png")
        kept[i] = str(folder / f"bmp{i}.bmp")
    _save(folder / "back\\slash.png", fixtures.png_bytes(fixtures.make_image(24, 24, seed=99)))
    os.symlink("gone.png", folder / "dangling.png")
    os.symlink("loop.png", folder / "loop.png")
    return kept


def test_every_matched_file_is_written_or_dead_lettered_and_copies_share_a_split(tmp_path):
    """9 photos under 45 names: 9 examples + 36 dead letters "duplicate_of"; no pixels in both
    splits; backslash names and broken symlinks are counted and dead-lettered."""
    folder = tmp_path / "in" / "hr"
    kept = _copies_inputs(folder)
    out = tmp_path / "out"
    config = _config(tmp_path / "in", out, lr_glob=None, val_fraction=0.5, min_lr_size=4)
    result = pipeline.run(config, PipelineOptions(_IN_PROCESS))
    manifest = result.manifest
    names = os.listdir(folder)
    assert manifest.num_inputs == len(names) == 9 * 5 + 3
    assert manifest.num_duplicates == 9 * 4 and result.counters["rejected_duplicate"] == 9 * 4
    assert manifest.num_rejected == 9 * 4 + 2
    dead = {line["path"]: line["reason"] for line in _rejected(out, manifest)}
    assert dead[str(folder / "dangling.png")] == "unreadable: dangling symlink (-> gone.png)"
    assert dead[str(folder / "loop.png")] == "unreadable: symlink loop (-> loop.png)"
    assert dead[str(folder / "z_link3.png")] == f"duplicate_of: {kept[3]}"
    written, digests = set(), {}
    for split in manifest.splits:
        for key, example in _read_split(out, manifest, split).items():
            hr = tf.io.decode_png(example["hr/encoded"]).numpy()
            digest = images.pixel_digest(hr)
            assert transforms.split_of(digest, 0.5) == split  # content decides, names do not
            digests.setdefault(split, set()).add(digest)
            written.add(next(str(p) for p in folder.iterdir() if p.stem == key))
    assert written == set(kept.values()) | {str(folder / "back\\slash.png")}
    assert sorted(written | set(dead)) == sorted(str(folder / name) for name in names)
    assert len(digests["train"]) + len(digests["validation"]) == 10
    assert not digests["train"] & digests["validation"]


def test_decode_rule_gives_the_job_and_load_rgb_the_same_pixels(tmp_path):
    """16-bit, grayscale and palette PNGs written by PIL: load_rgb == the record's HR pixels."""
    rgb = fixtures.make_image(32, 48, seed=6)
    gray16 = np.linspace(0, 65535, 32 * 48).reshape(32, 48).astype(np.uint16)
    sources = {
        "gray16": Image.fromarray(gray16),  # mode I;16
        "gray8": Image.fromarray(rgb).convert("L"),
        "palette": Image.fromarray(rgb).quantize(colors=32),
    }
    (tmp_path / "in" / "hr").mkdir(parents=True)
    for key, image in sources.items():
        image.save(tmp_path / "in" / "hr" / f"{key}.png")
    out = tmp_path / "out"
    result = pipeline.run(
        _config(tmp_path / "in", out, lr_glob=None, val_fraction=0.0),
        PipelineOptions(_IN_PROCESS),
    )
    records = _read_split(out, result.manifest, "train")
    assert sorted(records) == sorted(sources)
    for key, record in records.items():
        loaded = images.load_rgb(str(tmp_path / "in" / "hr" / f"{key}.png"))
        np.testing.assert_array_equal(tf.io.decode_png(record["hr/encoded"]).numpy(), loaded)
    scaled = np.rint(gray16 / 257.0).astype(np.uint8)  # 16 bit scaled to 8, not clipped at 255
    np.testing.assert_array_equal(
        images.load_rgb(str(tmp_path / "in" / "hr" / "gray16.png")),
        np.repeat(scaled[..., None], 3, -1),
    )


def _main(tmp_path, *extra):
    """(exit status, stderr) of the entry as `srgan-prepare` runs it (a subprocess: the trainer's
    and evaluator's entry modules define some of the same absl flag names in the test process)."""
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "data_prep.build_tfrecords",
            f"--hr_glob={tmp_path}/none/*.png",
            f"--output_dir={tmp_path}/out",
            *extra,
        ],
        capture_output=True,
        text=True,
        cwd=_REPO,
        check=False,
    )
    return done.returncode, done.stderr


def test_cli_user_errors_are_one_line(tmp_path):
    code, err = _main(tmp_path)
    assert code == 2
    assert err.strip().startswith("error: no files match"), err


@pytest.mark.parametrize(
    "arg, words",
    [
        ("--scael=4", "unknown flags: --scael=4 ("),  # a mistyped job flag
        ("--direct_num_workrs=2", "unknown flags: --direct_num_workrs=2 ("),  # a mistyped Beam flag
        ("photos", "positional arguments are not accepted: photos"),
        ("--scale=5", "scale must be one of (2, 3, 4, 8), got 5"),
        ("--lr=none --lr_glob=lr/*", "--lr=none synthesises or drops the LR, but --lr_glob"),
    ],
)
def test_cli_refuses_bad_arguments_before_anything_runs(tmp_path, arg, words):
    code, err = _main(tmp_path, *arg.split())
    assert code == 2
    assert err.count("\n") == 1 and err.startswith("error: ") and words in err, err
    assert not (tmp_path / "out").exists()


@contextlib.contextmanager
def _read_only(directory):
    """`directory` read-only for this user: mode 0555, and immutable (chattr +i) for root, whom
    modes do not stop; skips the test where neither works."""
    directory.chmod(0o555)
    immutable = os.geteuid() == 0
    if immutable and subprocess.run(["chattr", "+i", str(directory)], check=False).returncode:
        directory.chmod(0o755)
        pytest.skip("running as root without chattr: no way to make a read-only directory")
    try:
        yield
    finally:
        if immutable:
            subprocess.run(["chattr", "-i", str(directory)], check=True)
        directory.chmod(0o755)


@pytest.mark.parametrize("inside", [False, True], ids=["read-only dir", "dir to create in it"])
def test_cli_unwritable_output_dir_is_one_line_before_beam_runs(tmp_path, inside):
    _hr_only_inputs(tmp_path / "none", count=1)
    read_only = tmp_path / "ro"
    read_only.mkdir()
    out = read_only / "out" if inside else read_only
    with _read_only(read_only):
        code, err = _main(tmp_path, f"--output_dir={out}")
    assert code == 2 and "Traceback" not in err, err
    (line,) = err.splitlines()
    cause = "Operation not permitted" if os.geteuid() == 0 else "Permission denied"
    assert line.startswith(f"error: cannot write to the output directory {out}: ") and cause in line
    assert os.listdir(read_only) == []  # no beam-temp-* directory: Beam never started


def test_scale_help_lists_the_supported_scales():
    done = subprocess.run(
        [sys.executable, "-m", "data_prep.build_tfrecords", "--helpshort"],
        cwd=_REPO,
        capture_output=True,
        text=True,
        check=False,
    )
    assert ", ".join(map(str, schema.SCALES)) in done.stdout + done.stderr


@pytest.mark.parametrize(
    "args, line",
    [
        (
            ["--hr_glob=x/*.png", "--scael=4"],
            "error: unknown flags: --scael=4 (neither this job's flags nor Beam's PipelineOptions "
            "define them; --help lists the job's flags)",
        ),
        (
            ["--scale=four"],
            "error: flag --scale=four: invalid literal for int() with base 10: 'four' "
            "(--help lists the flags)",
        ),
        (
            [],
            "error: flag --hr_glob=None: Flag --hr_glob must have a value other than None. "
            "(--help lists the flags)",
        ),
    ],
    ids=["mistyped", "bad value", "missing"],
)
def test_cli_flag_errors_are_one_line_without_traceback(tmp_path, args, line):
    command = [
        sys.executable,
        "-m",
        "data_prep.build_tfrecords",
        f"--output_dir={tmp_path}/out",
        *args,
    ]
    done = subprocess.run(command, cwd=_REPO, capture_output=True, text=True, timeout=120)
    assert done.returncode == 2 and done.stdout == ""
    assert done.stderr.splitlines() == [line]
    assert not (tmp_path / "out").exists()


def test_cli_end_to_end_multi_processing(tmp_path):
    """The CLI as `make demo` runs it (2 workers, multi_processing), on the paired inputs."""
    bad = _paired_inputs(tmp_path / "in")
    out = tmp_path / "data"
    command = [
        sys.executable,
        "-m",
        "data_prep.build_tfrecords",
        f"--hr_glob={tmp_path}/in/hr/*",
        f"--lr_glob={tmp_path}/in/lr/*",
        f"--output_dir={out}",
        "--scale=4",
        "--min_lr_size=8",
        "--val_fraction=0.25",
        "--direct_num_workers=2",
    ]
    done = subprocess.run(command, cwd=_REPO, capture_output=True, text=True, timeout=240)
    assert done.returncode == 0, done.stderr[-3000:]
    # A quiet console: stdout is the summary; stderr holds at most the two lines each SDK worker
    # process prints while importing Beam, before it has read any option (beam_options explains).
    assert done.stdout.count("\n") == 1
    assert set(done.stderr.splitlines()) <= set(_WORKER_IMPORT_LINES), done.stderr
    manifest = schema.read_manifest(str(out))
    good = 3 + (14 if _SET14.is_dir() else 0)
    rejected = len(bad) + 3
    assert (
        done.stdout.strip().splitlines()[-1].startswith(f"data_prep: {good + rejected} inputs -> ")
    )
    assert sum(s.num_examples for s in manifest.splits.values()) == good
    assert manifest.num_rejected == len(_rejected(out, manifest)) == rejected
    assert manifest.num_inputs == good + rejected
    assert manifest.args["val_fraction"] == 0.25
    assert manifest.args["beam_args"] == ["--direct_num_workers=2"]
    again = subprocess.run(command, cwd=_REPO, capture_output=True, text=True, timeout=240)
    assert again.returncode == 2 and "Traceback" not in again.stderr
    assert "--overwrite" in again.stderr
