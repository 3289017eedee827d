"""One webdataset sample as one ArrayRecord record: a small header, then the files.

Layout: 4-byte little-endian header length, a JSON header {"__key__": key, "fields":
[[extension, length], ...]}, then each field's bytes in that order. Self-describing and
dependency-free (no protobuf, no TensorFlow), and the files are stored as they were in
the tar (encoded JPEG, UTF-8 caption), so converting loses nothing.
"""

import json
import struct

_HEAD = struct.Struct("<I")


def encode(sample: dict[str, bytes | str]) -> bytes:
    """{"__key__": str, ext: bytes, ...} -> one record."""
    fields = [(k, v) for k, v in sample.items() if k != "__key__"]
    header = json.dumps(
        {"__key__": str(sample.get("__key__", "")), "fields": [[k, len(v)] for k, v in fields]}
    ).encode("utf-8")
    return b"".join([_HEAD.pack(len(header)), header, *(v for _, v in fields)])


def decode(record: bytes) -> dict[str, bytes | str]:
    """The inverse of `encode`; ValueError when the record is damaged."""
    try:
        (n,) = _HEAD.unpack_from(record)
        header = json.loads(record[_HEAD.size : _HEAD.size + n])
        sample: dict[str, bytes | str] = {"__key__": header["__key__"]}
        at = _HEAD.size + n
        for ext, length in header["fields"]:
            sample[ext] = record[at : at + length]
            at += length
    except (struct.error, ValueError, KeyError, TypeError) as e:
        raise ValueError(f"damaged record: {e}") from e
    if at != len(record):
        raise ValueError(f"damaged record: {len(record)} bytes, header says {at}")
    return sample
