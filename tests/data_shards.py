"""Helpers for the data tests: small shard sets and reading what a pipeline yields."""

import io
import json
import tarfile

import numpy as np

from mmjax.data import pipeline
from tests.helpers import tiny_config
from tools.make_synthetic_shards import write_shards

__all__ = ["write_shards"]


def shard_keys(path: str) -> list[str]:
    """Sample keys of a tar shard, read with Python's tarfile (an independent reader)."""
    with tarfile.open(path) as t:
        return list(dict.fromkeys(m.name.split(".")[0] for m in t.getmembers()))


def wds_config(path: str, **overrides):
    """The tiny test model reading webdataset shards at `path`."""
    return tiny_config(
        **{
            "data.source": "wds",
            "data.path": str(path),
            "data.shuffle_buffer": 40,  # divides the test epochs (80 samples)
            "data.cycle_length": 2,
            **overrides,
        }
    )


def iterator(config, process_index: int = 0, process_count: int = 1):
    return pipeline.train_iterator(config, process_index, process_count)


def json_roundtrip(state: dict) -> dict:
    """What a checkpoint does to an iterator state (grain writes it as JSON)."""
    return json.loads(json.dumps(state))


def assert_same_batches(a: list[dict], b: list[dict]) -> None:
    assert len(a) == len(b)
    for x, y in zip(a, b):
        assert x.keys() == y.keys()
        for k in x:
            np.testing.assert_array_equal(x[k], y[k], err_msg=k)


def decoded_images(path: str) -> dict[bytes, str]:
    """Pillow-decoded pixels of every JPEG in a shard -> its key (to trace examples)."""
    from PIL import Image

    out = {}
    with tarfile.open(path) as t:
        for m in t.getmembers():
            if m.name.endswith(".jpg"):
                try:
                    pixels = Image.open(io.BytesIO(t.extractfile(m).read())).convert("RGB")
                    out[np.asarray(pixels).tobytes()] = m.name.split(".")[0]
                except OSError:
                    pass
    return out
