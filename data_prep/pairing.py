"""Pair keys from file names: the rule shared by the Beam job and the evaluator.

Built-in layouts (no configuration):
  DIV2K:   HR `0001.png`              LR `0001x4.png`             -> key `0001`
  suffix:  HR `img_001_SRF_4_HR.png`  LR `img_001_SRF_4_LR.png`   -> key `img_001`
           (also `name_HR.png` / `name_LR.png`)
Other layouts: a regex with a named group `key`, matched against the file's base name
(one for HR names, one for LR names). Only names ending in images.IMAGE_EXTENSIONS are image
files; any other name is refused with its reason, like a name the regex does not match.
"""

import collections
import dataclasses
import posixpath
import re

from data_prep import images

_SUFFIX_HR = re.compile(r"^(?P<key>.+?)(_SRF_\d+)?_HR$", re.IGNORECASE)
_SUFFIX_LR = re.compile(r"^(?P<key>.+?)(_SRF_\d+)?_LR$", re.IGNORECASE)


def _stem(path):
    return posixpath.splitext(posixpath.basename(path))[0]


def _match_key(regex, path):
    match = re.search(regex, posixpath.basename(path))
    if not match or "key" not in match.groupdict():
        raise ValueError(f"file name does not match the key pattern {regex!r}")
    return match.group("key")


def hr_key(path, regex=None):
    """The pair key of an HR file. Raises ValueError if `regex` is given and does not match."""
    if regex:
        return _match_key(regex, path)
    stem = _stem(path)
    match = _SUFFIX_HR.match(stem)
    return match.group("key") if match else stem


def lr_key(path, scale, regex=None):
    """The pair key of an LR file. Raises ValueError if `regex` is given and does not match."""
    if regex:
        return _match_key(regex, path)
    stem = _stem(path)
    match = _SUFFIX_LR.match(stem)
    if match:
        return match.group("key")
    div2k_suffix = f"x{scale}"
    if stem.lower().endswith(div2k_suffix):
        return stem[: -len(div2k_suffix)]
    return stem


def file_key(is_hr, path, scale, regex=None):
    """The pair key of an HR (is_hr) or LR image file.

    Raises:
      ValueError: the name does not end in an image extension, or `regex` does not match it.
    """
    if not images.is_image_name(path):
        raise ValueError(
            f"not an image file name (expected one of {', '.join(images.IMAGE_EXTENSIONS)})"
        )
    return hr_key(path, regex) if is_hr else lr_key(path, scale, regex)


@dataclasses.dataclass(frozen=True)
class Pairing:
    pairs: list  # (key, hr_path, lr_path), sorted by key
    rejected: list  # (path, key or None, reason)


def pair_paths(hr_paths, lr_paths, scale, hr_regex=None, lr_regex=None) -> Pairing:
    """Matches HR and LR files by key, in plain Python (the evaluator; small folders).

    Unmatched files, duplicate keys and names the regex does not match come back in `rejected`.
    """
    by_key = collections.defaultdict(lambda: ([], []))
    rejected = []
    for role, paths in ((0, hr_paths), (1, lr_paths)):
        for path in paths:
            try:
                key = file_key(role == 0, path, scale, hr_regex if role == 0 else lr_regex)
            except ValueError as e:
                rejected.append((path, None, str(e)))
                continue
            by_key[key][role].append(path)
    pairs = []
    for key in sorted(by_key):
        hrs, lrs = by_key[key]
        reason = pairing_problem(len(hrs), len(lrs))
        if reason:
            rejected.extend((path, key, reason) for path in hrs + lrs)
        else:
            pairs.append((key, hrs[0], lrs[0]))
    return Pairing(pairs=pairs, rejected=rejected)


def pairing_problem(num_hr, num_lr):
    """Why a key's files do not form one pair (None when they do)."""
    if num_hr > 1 or num_lr > 1:
        return f"duplicate key: {num_hr} HR and {num_lr} LR files share it"
    if num_lr == 0:
        return "HR image has no LR partner"
    if num_hr == 0:
        return "LR image has no HR partner"
    return None
