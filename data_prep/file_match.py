"""Every file a glob names, including the ones Beam's own match drops without a word.

Beam's FileSystems.match (and so fileio.MatchFiles; apache-beam 2.77) loses two kinds of local
files, so they were neither written nor dead-lettered by the job:
  * names containing a backslash: its `*` is `[^/\\]*` (a backslash counts as a Windows path
    separator), so `photos/*` never matches `photos/back\\slash.png`;
  * entries whose size cannot be read, i.e. dangling and looping symlinks: LocalFileSystem
    skips every listed entry for which os.path.getsize raises OSError.
`match` returns them all; the job then writes or dead-letters each one (a file that cannot be
read gets `unreadable_reason`, e.g. "unreadable: dangling symlink (-> gone.png)").

Pattern rule (Beam's, with POSIX names): `*` is any run of characters but `/`, `**` any run
including `/`, `?` one character but `/`, `[...]` / `[!...]` a character class; nothing is an
escape, so a backslash is an ordinary character. Only non-directories match (a symlink to a
directory counts as a directory, as for os.walk). Local paths are walked with os.walk; other
file systems (gs://, s3://, ...) are listed through FileSystems.match(prefix + "**"), whose `**`
keeps backslashes, and filtered by the same rule.
"""

import errno
import os
import re

from apache_beam.io.filesystem import FileMetadata
from apache_beam.io.filesystems import FileSystems

_PREFIX = re.compile(r"^[^[*?]*")  # the part of a pattern before its first glob character


def translate(pattern):
    """The regular expression (whole path) of a glob `pattern`, by the rule above."""
    i, n, out = 0, len(pattern), []
    while i < n:
        c = pattern[i]
        i += 1
        if c == "*":
            if i < n and pattern[i] == "*":
                out.append(".*")
                i += 1
            else:
                out.append("[^/]*")
        elif c == "?":
            out.append("[^/]")
        elif c == "[":
            j = i + (i < n and pattern[i] == "!")
            j += j < n and pattern[j] == "]"
            while j < n and pattern[j] != "]":
                j += 1
            if j >= n:  # no closing bracket: a literal "["
                out.append(r"\[")
                continue
            body = pattern[i:j].replace("\\", "\\\\")
            i = j + 1
            if body[0] == "!":
                body = "^" + body[1:]
            elif body[0] == "^":
                body = "\\" + body
            out.append(f"[{body}]")
        else:
            out.append(re.escape(c))
    return "(?s)" + "".join(out) + r"\Z"


def has_glob(pattern):
    return _PREFIX.match(pattern).group(0) != pattern


def is_local(path):
    return FileSystems.get_scheme(path) is None


def match(pattern):
    """FileMetadata of every file `pattern` names, sorted by path (size 0 when unreadable).

    Raises:
      OSError: a local directory under the pattern's fixed prefix cannot be listed (its files
        would otherwise go missing silently), or the remote listing fails (BeamIOError).
    """
    found = _match_local(pattern) if is_local(pattern) else _match_remote(pattern)
    return sorted(found, key=lambda m: m.path)


def _size(path):
    try:
        return os.path.getsize(path)
    except OSError:  # dangling or looping symlink: still matched, dead-lettered later
        return 0


def _raise(error):
    raise error


def _match_local(pattern):
    if not has_glob(pattern):
        exists = os.path.lexists(pattern) and not os.path.isdir(pattern)
        return [FileMetadata(pattern, _size(pattern))] if exists else []
    root = os.path.dirname(_PREFIX.match(pattern).group(0))
    if not os.path.isdir(root or "."):
        return []
    regex = re.compile(translate(pattern))
    found = []
    # os.walk lists dangling and looping symlinks among the files (they are not directories).
    for directory, _, names in os.walk(root or ".", onerror=_raise):
        for name in names:
            path = (
                os.path.join(directory, name)
                if root
                else os.path.relpath(os.path.join(directory, name))
            )
            if regex.match(path):
                found.append(FileMetadata(path, _size(path)))
    return found


def _match_remote(pattern):
    if not has_glob(pattern):
        return FileSystems.match([pattern])[0].metadata_list
    listing = FileSystems.match([_PREFIX.match(pattern).group(0) + "**"])[0].metadata_list
    regex = re.compile(translate(pattern))
    return [m for m in listing if regex.match(m.path)]


def unreadable_reason(path, error):
    """The dead-letter reason of a matched file that could not be read: "unreadable: ..."."""
    if is_local(path) and os.path.islink(path):
        try:
            os.stat(path)
        except OSError as e:
            target = os.readlink(path)
            if e.errno == errno.ELOOP:
                return f"unreadable: symlink loop (-> {target})"
            if e.errno == errno.ENOENT:
                return f"unreadable: dangling symlink (-> {target})"
    return f"unreadable: {cause(error)}"


def cause(error):
    """The innermost reason of a (Beam-wrapped) I/O error, e.g. "[Errno 13] Permission denied"."""
    details = getattr(error, "exception_details", None)
    if details:  # BeamIOError: {path: exception}
        return cause(next(iter(details.values())))
    for arg in error.args:
        if isinstance(arg, BaseException):
            return cause(arg)
    if isinstance(error, OSError) and error.strerror:
        return error.strerror
    return str(error)
