"""One path layer for a workdir and everything in it: local paths and fsspec URLs.

A workdir is a local folder or a URL (`gs://bucket/run`, `s3://...`, `memory://...`: any
filesystem fsspec has a driver for; gcsfs for `gs://`). Everything mmjax writes to a
workdir goes through here, so a `gs://` workdir never creates a local folder named
`gs:`, and every file lands in the bucket. Paths are plain strings throughout.

Object stores have no append and no rename: `AppendFile` keeps what it wrote and
rewrites the whole object (in a background thread, so a step never waits on the
network), and `write_text` relies on a single upload being atomic. Local writes go
through a temporary file and `os.replace`, so a reader never sees half a file.
"""

from __future__ import annotations

import logging
import os
import threading
import zlib
from collections.abc import Iterator
from typing import Any

PathLike = str | os.PathLike


def is_remote(path: PathLike) -> bool:
    """A URL with a scheme other than file:// (gs://, s3://, memory://, ...)."""
    return "://" in str(path) and not str(path).startswith("file://")


def _local(path: PathLike) -> str:
    return str(path).removeprefix("file://")


def protocol(path: PathLike) -> str:
    """ "gs" for gs://bucket/run; "" for a local path."""
    return str(path).split("://", 1)[0] if is_remote(path) else ""


def join(path: PathLike, *parts: str) -> str:
    """Joins with "/" for URLs (never os.sep), with os.path.join for local paths."""
    path = str(path)
    if not is_remote(path):
        return os.path.join(path, *parts)
    for part in parts:
        path = path.rstrip("/") + "/" + part.lstrip("/")
    return path


def parent(path: PathLike) -> str:
    """The folder holding `path` (a URL's parent stays a URL)."""
    path = str(path).rstrip("/")
    return path.rsplit("/", 1)[0] if is_remote(path) else os.path.dirname(path)


def absolute(path: PathLike) -> str:
    """A local path made absolute (for messages and Orbax); a URL unchanged."""
    return str(path) if is_remote(path) else os.path.abspath(_local(path))


def filesystem(path: PathLike) -> Any:
    """The fsspec filesystem of a URL (e.g. gcsfs for gs://)."""
    try:
        import fsspec
    except ImportError as e:  # pragma: no cover - fsspec comes with the runtime deps
        raise ImportError(f"{path} needs fsspec and its driver (pip install gcsfs).") from e
    return fsspec.filesystem(protocol(path))


def _fresh(path: PathLike) -> Any:
    """The filesystem with its listing cache dropped: other processes (and Orbax, through
    its own client) write here too, and a stale listing would hide their files."""
    fs = filesystem(path)
    fs.invalidate_cache()
    return fs


def exists(path: PathLike) -> bool:
    if is_remote(path):
        return _fresh(path).exists(str(path))
    return os.path.exists(_local(path))


def isdir(path: PathLike) -> bool:
    """A folder; on an object store, a prefix that holds at least one object."""
    if is_remote(path):
        return _fresh(path).isdir(str(path))
    return os.path.isdir(_local(path))


def makedirs(path: PathLike) -> None:
    """Creates a local folder and its parents; object stores need none."""
    if is_remote(path):
        return
    os.makedirs(_local(path), exist_ok=True)


def listdir(path: PathLike) -> list[str]:
    """Names (not paths) in a folder, sorted; [] for a folder that does not exist."""
    if is_remote(path):
        fs = _fresh(path)
        if not fs.isdir(str(path)):
            return []
        names = {p.rstrip("/").rsplit("/", 1)[-1] for p in fs.ls(str(path), detail=False)}
        return sorted(names)
    local = _local(path)
    return sorted(os.listdir(local)) if os.path.isdir(local) else []


def files_under(path: PathLike) -> dict[str, int]:
    """{path relative to `path` ("state/d/0a1f"): size in bytes} of every file below it."""
    if is_remote(path):
        fs = _fresh(path)
        root = fs._strip_protocol(str(path)).rstrip("/") + "/"
        found = fs.find(str(path), detail=True)
        return {
            name[len(root) :]: int(info["size"])
            for name, info in found.items()
            if info["type"] == "file" and name.startswith(root)
        }
    out = {}
    local = _local(path)
    for folder, _, names in os.walk(local):
        for name in names:
            full = os.path.join(folder, name)
            out[os.path.relpath(full, local).replace(os.sep, "/")] = os.path.getsize(full)
    return out


def read_bytes(path: PathLike) -> bytes:
    if is_remote(path):
        return _fresh(path).cat_file(str(path))
    with open(_local(path), "rb") as f:
        return f.read()


def read_text(path: PathLike) -> str:
    return read_bytes(path).decode()


def write_bytes(path: PathLike, data: bytes) -> None:
    """Writes a whole file; a reader sees the old or the new content, never a mix."""
    if is_remote(path):
        filesystem(path).pipe_file(str(path), data)  # one upload: atomic on object stores
        return
    local = _local(path)
    os.makedirs(os.path.dirname(os.path.abspath(local)), exist_ok=True)
    tmp = f"{local}.tmp-{os.getpid()}"
    with open(tmp, "wb") as f:
        f.write(data)
    os.replace(tmp, local)


def write_text(path: PathLike, text: str) -> None:
    write_bytes(path, text.encode())


def rename(src: PathLike, dst: PathLike) -> None:
    """Moves a file or a folder (on object stores: copy, then delete)."""
    if is_remote(src):
        filesystem(src).mv(str(src), str(dst), recursive=True)
    else:
        os.replace(_local(src), _local(dst))


def remove(path: PathLike) -> None:
    if is_remote(path):
        filesystem(path).rm_file(str(path))
    else:
        os.remove(_local(path))


def open_file(path: PathLike, mode: str = "rb") -> Any:
    """A file object for reading or writing a whole file (not appending: AppendFile)."""
    if "a" in mode:
        raise ValueError("Use storage.AppendFile to append: object stores cannot append.")
    if is_remote(path):
        return filesystem(path).open(str(path), mode)
    if "w" in mode:
        os.makedirs(os.path.dirname(os.path.abspath(_local(path))), exist_ok=True)
    return open(_local(path), mode)


def crc32(path: PathLike, chunk: int = 1 << 22) -> int:
    """CRC-32 of a file's content, streamed (zlib's: the same on every filesystem)."""
    value = 0
    with open_file(path, "rb") as f:
        while block := f.read(chunk):
            value = zlib.crc32(block, value)
    return value


def checksums_under(path: PathLike, names: set[str] | None = None) -> dict[str, str]:
    """{path relative to `path`: checksum} of the files below it (or of `names` only).

    Where the store keeps a checksum of each object (gs://: CRC32C in the object's
    metadata) that one, so nothing is downloaded; elsewhere the CRC-32 of the content.
    The value names its algorithm ("crc32c:mnG7TA==", "crc32:3610a686").
    """
    out = {}
    if is_remote(path):
        fs = _fresh(path)
        root = fs._strip_protocol(str(path)).rstrip("/") + "/"
        for name, info in fs.find(str(path), detail=True).items():
            rel = name[len(root) :]
            if info["type"] != "file" or (names is not None and rel not in names):
                continue
            stored = info.get("crc32c")
            out[rel] = f"crc32c:{stored}" if stored else f"crc32:{crc32(join(path, rel)):08x}"
        return out
    for rel in files_under(path) if names is None else names:
        out[rel] = f"crc32:{crc32(join(path, rel)):08x}"
    return out


class AppendFile:
    """A file that grows by appends (metrics.jsonl, TensorBoard events), anywhere.

    Local: an ordinary file opened for appending, flushed on `flush`. URL: the content
    (what was there at open, plus every write) is uploaded as one object on `flush`, by
    a background thread that coalesces flushes, so the caller never waits on the
    network; `close` waits for the last upload. Takes bytes, or str in text mode.
    """

    def __init__(self, path: PathLike, binary: bool = False):
        self.path = str(path)
        self._binary = binary
        self._remote = is_remote(path)
        if not self._remote:
            makedirs(os.path.dirname(os.path.abspath(_local(path))))
            self._file = open(_local(path), "ab")  # noqa: SIM115 - closed in close()
            return
        self._data = bytearray(read_bytes(path) if exists(path) else b"")
        self._written = len(self._data)  # length of the content the object holds
        self._wanted = self._written  # length the last flush asked for
        self._closing = False
        self._cond = threading.Condition()
        self._thread = threading.Thread(target=self._upload_loop, daemon=True)
        self._thread.start()

    def write(self, data: bytes | str) -> None:
        raw = data if isinstance(data, bytes) else data.encode()
        if not self._remote:
            self._file.write(raw)
            return
        with self._cond:
            self._data += raw

    def flush(self) -> None:
        if not self._remote:
            self._file.flush()
            return
        with self._cond:
            self._wanted = len(self._data)
            self._cond.notify_all()

    def _upload_loop(self, retries_at_close: int = 3) -> None:
        failures = 0
        while True:
            with self._cond:
                self._cond.wait_for(lambda: self._wanted > self._written or self._closing)
                if self._wanted <= self._written or (self._closing and failures > retries_at_close):
                    return
                snapshot = bytes(self._data)
            try:
                write_bytes(self.path, snapshot)
                failures = 0
            except Exception as error:  # retried by the next flush, and at close
                failures += 1
                logging.warning("Could not write %s (try %d): %s", self.path, failures, error)
                threading.Event().wait(min(30.0, 2.0**failures))
                continue
            with self._cond:
                self._written = len(snapshot)

    def close(self) -> None:
        """Writes everything out (waits for the upload) and closes."""
        if not self._remote:
            self._file.close()
            return
        with self._cond:
            self._wanted = len(self._data)
            self._closing = True
            self._cond.notify_all()
        self._thread.join()


class _TensorBoardFiles:
    """tensorboardX's writer factory for a URL scheme: event files as `AppendFile`s."""

    def open(self, path: str) -> AppendFile:
        return AppendFile(path, binary=True)

    def directory_check(self, path: str) -> None:
        del path  # object stores need no folders


def tensorboard_writer(logdir: PathLike) -> Any:
    """A tensorboardX `SummaryWriter` whose event files land in `logdir`, local or URL.

    tensorboardX picks a file writer by URL scheme; its own gs:// one needs the
    google-cloud-storage client and credentials of its own. Registering ours sends every
    scheme through fsspec, like the rest of the workdir. None without tensorboardX.
    """
    try:
        from tensorboardX import SummaryWriter, record_writer
    except ImportError:
        logging.warning("tensorboardX is not installed: no TensorBoard events.")
        return None
    if is_remote(logdir):
        record_writer.register_writer_factory(protocol(logdir), _TensorBoardFiles())
    return SummaryWriter(str(logdir))


def iter_lines(path: PathLike) -> Iterator[str]:
    """The non-empty lines of a text file; nothing if it does not exist."""
    if not exists(path):
        return
    for line in read_text(path).splitlines():
        if line.strip():
            yield line
