"""A raw record -> a train example {modality: array}, or the reason to skip it.

Every source yields raw records: a dict of fields (a webdataset sample {"jpg": bytes,
"txt": bytes, "__key__": ...}, a TFDS example, the synthetic source's {"image": array,
"text": str, "label": int}), or a `Skipped`. `Prepare` finds each modality's field by
its `key` list and hands it to that modality's reader (modalities.py). Bad data never
raises here: a corrupt image, an empty caption, a missing field, a value that decodes to
another shape or dtype than the reader declares become a `Skipped` marker
that travels down the pipeline in the example's place and is counted when batches are
formed (stages.py), so nothing is dropped silently and a resumed run counts the same.
"""

import dataclasses
import json
import zlib
from typing import Any

import numpy as np

from mmjax.data.modalities import Reader
from mmjax.data.skipped import Skipped


def _is_list(value: Any) -> bool:
    return isinstance(value, list | tuple) or (
        isinstance(value, np.ndarray) and value.dtype == object and value.ndim == 1
    )


def _child(value: Any, part: str) -> Any:
    """`value[part]` for nested records; encoded JSON (webdataset's .json) is parsed."""
    if isinstance(value, bytes | str) and not isinstance(value, np.ndarray):
        try:
            value = json.loads(value)
        except (ValueError, UnicodeDecodeError):
            return None
    return value.get(part) if isinstance(value, dict) else None


def field(record: dict, keys: tuple[str, ...], multi: bool = False) -> Any:
    """The first of `keys` present in `record` (keys may be paths into nested records or
    JSON fields: "captions/text", "json/captions").

    A list of values (several captions) gives its first, or, with `multi`, all of them
    as a list (a single value as a list of one).
    """
    for key in keys:
        value = record
        for part in key.split("/"):
            value = _child(value, part) if value is not record else record.get(part)
        if value is not None:
            if _is_list(value):
                if multi:
                    return list(value)
                return value[0] if len(value) else None
            return [value] if multi else value
    return None


def record_key(record: dict) -> str:
    return str(record.get("__key__", record.get("key", "")))


class LazyGenerator:
    """`np.random.default_rng(seed)`, made on first use: making one costs tens of
    microseconds, and most readers of a record (text, labels, arrays already at their
    shape) draw nothing. The numbers are those of the generator it stands for."""

    def __init__(self, seed):
        self._seed, self._rng = seed, None

    def __getattr__(self, name: str):
        if name in ("_seed", "_rng"):  # not set yet (a copy being made): no recursion
            raise AttributeError(name)
        if self._rng is None:
            self._rng = np.random.default_rng(self._seed)
        return getattr(self._rng, name)


class Prepare:
    """Raw record -> {modality: array} or `Skipped`, for the readers of `build_readers`.

    Each modality draws its randomness from its own generator, seeded from the example's
    generator and the modality's name, so adding a modality changes no other's crops.
    """

    def __init__(self, readers: dict[str, tuple[tuple[str, ...], Reader]]):
        self.readers = readers

    def __call__(self, raw: dict | Skipped, rng: np.random.Generator) -> dict | Skipped:
        if isinstance(raw, Skipped):
            return raw
        key = record_key(raw)
        base = int(rng.integers(2**62))
        out = {}
        for name, (keys, reader) in self.readers.items():
            value = field(raw, keys, getattr(reader, "multi", False))
            if value is None:
                return Skipped(f"missing_{name}", key)
            sub = LazyGenerator([base, zlib.crc32(name.encode())])
            result = reader(value, sub)
            if not isinstance(result, Skipped):
                result = _as_declared(result, reader, name)
            if isinstance(result, Skipped):
                return dataclasses.replace(result, key=key)
            out[name] = result
        return out


def _as_declared(value: Any, reader: Reader, name: str) -> np.ndarray | Skipped:
    """`value` if it has the reader's declared shape (and dtype, or one of the same kind,
    cast), else a `bad_<m>` skip.

    Readers decode what the record holds: a file that decodes to another size (a
    two-channel PNG, a clip of another layout) must not reach the batch, where stacking
    it with the others would end the run.
    """
    shape, dtype = getattr(reader, "shape", None), getattr(reader, "dtype", None)
    got = np.shape(value)
    if shape is not None and got != tuple(shape):
        return Skipped(f"bad_{name}", detail=f"decoded to shape {list(got)}, not {list(shape)}")
    if dtype is None or np.asarray(value).dtype == dtype:
        return value
    if np.can_cast(np.asarray(value).dtype, dtype, "same_kind"):  # int64 labels, float64 ...
        return np.asarray(value, dtype)
    return Skipped(f"bad_{name}", detail=f"decoded to {np.asarray(value).dtype}, not {dtype}")
