"""file_match: every file a glob names, including those Beam's FileSystems.match drops."""

import fnmatch
import os
import re

import pytest
from apache_beam.io.filesystems import FileSystems

from data_prep import file_match


@pytest.fixture
def folder(tmp_path):
    """Regular files, a backslash name, symlinks (good, dangling, looping, to a directory)."""
    for name in ("a.png", "back\\slash.png", ".hidden.png", "sub/deep.png"):
        (tmp_path / name).parent.mkdir(exist_ok=True)
        (tmp_path / name).write_bytes(b"x" * 3)
    os.symlink("a.png", tmp_path / "link.png")
    os.symlink("nowhere.png", tmp_path / "dangling.png")
    os.symlink("loop.png", tmp_path / "loop.png")
    os.symlink("sub", tmp_path / "dirlink.png")  # a directory: not a file, never matched
    return tmp_path


def _names(root, metadata):
    return sorted(os.path.relpath(m.path, root) for m in metadata)


def test_match_names_what_beam_drops(folder):
    top = [".hidden.png", "a.png", "back\\slash.png", "dangling.png", "link.png", "loop.png"]
    found = file_match.match(f"{folder}/*")
    assert _names(folder, found) == top
    sizes = {os.path.basename(m.path): m.size_in_bytes for m in found}
    assert sizes["dangling.png"] == sizes["loop.png"] == 0 and sizes["a.png"] == 3
    beam = _names(folder, FileSystems.match([f"{folder}/*"])[0].metadata_list)
    assert sorted(set(top) - set(beam)) == ["back\\slash.png", "dangling.png", "loop.png"]
    assert _names(folder, file_match.match(f"{folder}/**")) == sorted(top + ["sub/deep.png"])
    # No glob character: the path itself, even a dangling symlink; a backslash is no escape.
    assert _names(folder, file_match.match(f"{folder}/dangling.png")) == ["dangling.png"]
    assert _names(folder, file_match.match(f"{folder}/back\\slash.png")) == ["back\\slash.png"]
    assert file_match.match(f"{folder}/sub") == [] and file_match.match(f"{folder}/no/*") == []


def test_relative_pattern_and_remote_listing_keep_backslash_names(folder, monkeypatch):
    monkeypatch.chdir(folder)
    assert [m.path for m in file_match.match("*slash*")] == ["back\\slash.png"]
    # The branch for gs:// and other object stores, run on local files through FileSystems.
    remote = file_match._match_remote(f"{folder}/[ab]*.png")
    assert _names(folder, remote) == ["a.png", "back\\slash.png"]


@pytest.mark.parametrize(
    "pattern",
    ["*.png", "a?c", "[!a]*", "[ab]x", "x[", "[]]", "[^a]"],
)
def test_translate_agrees_with_fnmatch_on_single_names(pattern):
    names = ["a.png", "abc", "b\\c.png", "bx", "x[", "]", "^", "a", "", "a/c"]
    ours = [n for n in names if re.match(file_match.translate(pattern), n)]
    # fnmatch's `*` and `?` also cross "/"; a name with "/" is no single name.
    theirs = [n for n in names if "/" not in n and fnmatch.fnmatchcase(n, pattern)]
    assert ours == theirs


def test_unreadable_reason_names_the_symlink_problem(folder):
    reasons = {}
    for name in ("dangling.png", "loop.png", "gone.png"):
        path = str(folder / name)
        try:
            open(path, "rb").close()
        except OSError as e:
            reasons[name] = file_match.unreadable_reason(path, e)
    assert reasons == {
        "dangling.png": "unreadable: dangling symlink (-> nowhere.png)",
        "loop.png": "unreadable: symlink loop (-> loop.png)",
        "gone.png": "unreadable: No such file or directory",
    }
