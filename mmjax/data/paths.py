"""`config.data.path` -> a sorted list of files: paths, globs, brace ranges, remote URLs.

img2dataset writes `00000.tar ... 00999.tar` with `_stats.json` and parquet files beside
them, and users name them as a folder, a glob, a brace range (`{00000..00999}.tar`) or a
`gs://` URL. Remote paths go through fsspec (gcsfs, s3fs, ... when installed). A path that
matches nothing fails at start (`NoFilesError`, a user error), with the path and the
nearest thing that does exist in the message.
"""

import glob
import os
import re

from mmjax.errors import MissingPackageError, UserError

_RANGE = re.compile(r"\{(\d+)\.\.(\d+)\}")
_CHOICE = re.compile(r"\{([^{}]*,[^{}]*)\}")


def expand_braces(pattern: str) -> list[str]:
    """`a{00..02}b{x,y}` -> a00bx, a00by, a01bx, ...: leftmost first, zero padding kept, as bash."""
    found = [m for m in (_RANGE.search(pattern), _CHOICE.search(pattern)) if m]
    if not found:
        return [pattern]
    m = min(found, key=lambda m: m.start())
    head, tail = pattern[: m.start()], pattern[m.end() :]
    if m.re is _CHOICE:
        choices = m.group(1).split(",")
    else:
        lo, hi = m.group(1), m.group(2)
        width = len(lo) if lo.startswith("0") else 0
        step = 1 if int(hi) >= int(lo) else -1
        choices = [f"{i:0{width}d}" for i in range(int(lo), int(hi) + step, step)]
    return [out for c in choices for out in expand_braces(head + c + tail)]


class NoFilesError(UserError, FileNotFoundError):
    """A data path that names no files."""


class EmptyPathError(UserError, ValueError):
    """No data path where one is needed."""


def is_remote(path: str) -> bool:
    return "://" in path and not path.startswith("file://")


def _filesystem(path: str):
    try:
        import fsspec
    except ImportError as e:
        raise MissingPackageError(f"Reading {path} needs fsspec (pip install fsspec gcsfs).") from e
    return fsspec.core.url_to_fs(path)[0]


def _match(pattern: str, suffix: str) -> list[str]:
    """Files named by one pattern: a folder (its `*suffix` files), a glob, or a file."""
    if is_remote(pattern):
        fs = _filesystem(pattern)
        protocol = pattern.split("://", 1)[0]
        if fs.isdir(pattern):
            pattern = pattern.rstrip("/") + "/*" + suffix
        found = fs.glob(pattern) if glob.has_magic(pattern) else [pattern] * fs.exists(pattern)
        return [p if "://" in p else f"{protocol}://{p}" for p in found]
    pattern = pattern.removeprefix("file://")
    if os.path.isdir(pattern):
        pattern = os.path.join(pattern, "*" + suffix)
    return glob.glob(pattern) if glob.has_magic(pattern) else [pattern] * os.path.isfile(pattern)


def list_files(path: str, suffix: str = "") -> list[str]:
    """All files named by `path` (several may be joined with "::" or ";"), sorted.

    A folder means its files ending in `suffix` (e.g. ".tar", which leaves out
    img2dataset's `_stats.json` and parquet files). Fails, naming the path, when
    nothing matches.
    """
    if not path:
        raise EmptyPathError("the data path is empty: set it to the data files.")
    files: list[str] = []
    patterns = [p for part in re.split(r"::|;", path) for p in expand_braces(part.strip())]
    for pattern in patterns:
        files.extend(_match(pattern, suffix))
    if not files:
        raise NoFilesError(f"{path!r} matches no files{_why_nothing(patterns[0], suffix)}.")
    return sorted(dict.fromkeys(files))


def _why_nothing(pattern: str, suffix: str) -> str:
    """Why a local pattern matched nothing: its folder is missing, or holds no such files."""
    if is_remote(pattern):
        return f" (first tried: {pattern})"
    local = pattern.removeprefix("file://")
    if os.path.isdir(local):
        return f" (the folder {local} holds no *{suffix} files)"
    folder = os.path.dirname(local) or "."
    while folder not in ("", os.sep) and glob.has_magic(folder):
        folder = os.path.dirname(folder)
    if not os.path.isdir(folder):
        return f" (no such folder: {folder})"
    return f" (first tried: {local})"


def open_file(path: str):
    """A binary file object for a local path or a remote URL (through fsspec)."""
    if is_remote(path):
        return _filesystem(path).open(path, "rb")
    return open(path.removeprefix("file://"), "rb")
