"""A version that failed to load is retried when its files settle, or after a back-off.

A version directory created empty and filled a few seconds later (cp -r, rsync) used to be
remembered as broken on the first poll and never loaded.
"""

import shutil
import time

import pytest

from serving import model_manager
from tests.serving.conftest import MODEL_NAME

POLL = 0.2


def _wait_for(condition, seconds):
    deadline = time.monotonic() + seconds
    while not condition() and time.monotonic() < deadline:
        time.sleep(POLL / 4)
    return condition()


@pytest.fixture
def base(export_dir, tmp_path):
    base = tmp_path / MODEL_NAME
    shutil.copytree(export_dir, base / "1")
    return base


def test_a_version_filled_after_it_appeared_is_served(base, export_dir):
    manager = model_manager.ModelManager(str(base), MODEL_NAME, poll_seconds=POLL, warmup=False)
    assert manager.load_newest() == 1
    manager.start_polling()
    try:
        (base / "2").mkdir()
        assert _wait_for(lambda: "version 2 failed" in manager.retry_plan(), 5 * POLL)
        time.sleep(1)  # five polls of an unchanged empty directory: no new attempt
        assert "failed 1 time(s)" in manager.retry_plan()
        shutil.copytree(export_dir, base / "2", dirs_exist_ok=True)
        assert _wait_for(lambda: manager.version == 2, 20 * POLL)
    finally:
        manager.stop()
    assert manager.retry_plan() == ""


def test_an_unchanged_broken_version_is_retried_after_a_back_off(base):
    manager = model_manager.ModelManager(str(base), MODEL_NAME, warmup=False, retry_seconds=0.5)
    assert manager.load_newest() == 1
    (base / "2").mkdir()
    (base / "2" / "saved_model.pb").write_bytes(b"not a SavedModel")
    with pytest.raises(Exception):  # noqa: B017 - whatever TF raises for a corrupt SavedModel
        manager.load_newest()
    assert manager.load_newest() == 1  # not again at once
    time.sleep(0.6)
    with pytest.raises(Exception):  # noqa: B017
        manager.load_newest()
    assert "failed 2 time(s)" in manager.retry_plan()
    assert manager.load_newest() == 1  # the back-off doubled: 1 s now
    assert manager.version == 1


def test_names_that_are_not_plain_integers_are_not_versions(base, export_dir):
    for name in ("²", "v2", "3a"):
        shutil.copytree(export_dir, base / name)
    manager = model_manager.ModelManager(str(base), MODEL_NAME, warmup=False)
    assert manager.load_newest() == 1
    assert manager.load_newest() == 1
    assert manager.retry_plan() == ""
