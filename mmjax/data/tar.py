"""Webdataset samples from a tar byte stream, each with the offset where the next begins.

A webdataset shard is a plain tar in which consecutive files sharing a key (the name up
to the first dot of the last path part) form one sample: `000000123.jpg`,
`000000123.txt`, `000000123.json` -> {"__key__": "000000123", "jpg": ..., "txt": ...,
"json": ...}. Reading sequentially suits remote files; the offset after each sample is
all a resumed reader needs (it opens the file and seeks there), so checkpoints stay tiny.

A minimal reader of our own rather than `tarfile`, so that offsets are exact and a
truncated or corrupt shard raises `BadShard` instead of yielding a cut-off sample.
Handles ustar and GNU long names and pax `path` records, the formats Python's `tarfile`
(and hence img2dataset and webdataset's writer) produce.
"""

from collections.abc import Iterator
from typing import BinaryIO

BLOCK = 512


class BadShard(Exception):
    """The tar is truncated or corrupt at some offset."""


def _octal(field: bytes) -> int:
    field = field.rstrip(b"\0 ").strip()
    try:
        return int(field, 8) if field else 0
    except ValueError:
        raise BadShard(f"corrupt tar header field {field[:12]!r}") from None


def _read_exactly(f: BinaryIO, n: int, offset: int) -> bytes:
    data = f.read(n)
    while len(data) < n:
        more = f.read(n - len(data))
        if not more:
            raise BadShard(f"unexpected end of file at byte {offset + len(data)}")
        data += more
    return data


def _checksums(header: bytes) -> tuple[int, int]:
    """Unsigned and signed header sums, the checksum field counted as spaces (POSIX)."""
    body = header[:148] + b" " * 8 + header[156:]
    return sum(body), sum(b - 256 if b > 127 else b for b in body)


def _padded(size: int) -> int:
    return -(-size // BLOCK) * BLOCK


def _pax_path(data: bytes) -> str | None:
    """The `path` record of a pax header ("<len> path=<name>\\n" records)."""
    for record in data.decode("utf-8", "replace").split("\n"):
        _, _, kv = record.partition(" ")
        key, _, value = kv.partition("=")
        if key == "path":
            return value
    return None


def members(f: BinaryIO, offset: int = 0) -> Iterator[tuple[str, bytes, int, int]]:
    """(name, data, header offset, offset after the member) for each regular file.

    `f` is positioned at `offset`, the start of a member header.
    """
    long_name: str | None = None
    start = offset  # where the current member's headers begin (pax / long name first)
    while True:
        header = f.read(BLOCK)
        if not header:
            raise BadShard(f"missing end-of-archive marker at byte {offset}")
        if len(header) < BLOCK:
            header += _read_exactly(f, BLOCK - len(header), offset + len(header))
        offset += BLOCK
        if header == b"\0" * BLOCK:
            return  # end of archive
        if _octal(header[148:156]) not in _checksums(header):
            raise BadShard(f"bad tar header checksum at byte {offset - BLOCK}")
        size, kind = _octal(header[124:136]), header[156:157]
        data = _read_exactly(f, _padded(size), offset)[:size] if size else b""
        offset += _padded(size)
        if kind in (b"L", b"x"):  # GNU long name / pax: applies to the next member
            long_name = data.rstrip(b"\0").decode("utf-8") if kind == b"L" else _pax_path(data)
            continue
        if kind not in (b"0", b"\0", b"7"):  # folders, links, global pax headers
            long_name, start = None, offset
            continue
        name = header[:100].rstrip(b"\0").decode("utf-8", "replace")
        if header[257:262] == b"ustar" and header[345] != 0:
            name = header[345:500].rstrip(b"\0").decode("utf-8", "replace") + "/" + name
        yield long_name or name, data, start, offset
        long_name, start = None, offset


def split_name(name: str) -> tuple[str, str]:
    """ "dir/000000123.jpg" -> ("dir/000000123", "jpg"), webdataset's grouping rule."""
    folder, _, base = name.rpartition("/")
    stem, _, ext = base.partition(".")
    return (f"{folder}/{stem}" if folder else stem), ext


def samples(f: BinaryIO, offset: int = 0) -> Iterator[tuple[dict[str, bytes | str], int]]:
    """(sample, offset where the next sample's first member starts) for each sample."""
    current: dict[str, bytes | str] = {}
    for name, data, start, _ in members(f, offset):
        key, ext = split_name(name)
        if current and current["__key__"] != key:
            yield current, start
            current = {}
        if not ext or name.split("/")[-1].startswith("."):
            continue  # no extension or hidden (e.g. macOS "._" files): not a sample field
        current.setdefault("__key__", key)
        current[ext.lower()] = data
    if current:
        yield current, -1  # -1: the shard is done
