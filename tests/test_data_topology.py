"""Augmentation independent of the topology: every example's random crop is a function of
the seed and the example alone, so 1 process and 2 processes produce the same pixels."""

import numpy as np
import pytest

from mmjax.data import modalities, pipeline
from mmjax.data.examples import Prepare
from mmjax.data.sources import build_source
from tests.data_shards import iterator, write_shards
from tests.helpers import tiny_config

# Strong crops, so that a crop drawn from another generator would differ.
AUGMENT = {"data.modalities.image.crop_scale": (0.2, 1.0)}


@pytest.fixture(scope="module")
def shards(tmp_path_factory):
    out = tmp_path_factory.mktemp("shards")
    write_shards(str(out), shards=4, per_shard=12, image_size=24)
    return out


def global_batches(config, processes: int, steps: int) -> list[dict]:
    """Global batches k = 0..steps-1 put together from every process's share (process p
    holds global rows p, p + P, ...)."""
    iters = [iterator(config, p, processes) for p in range(processes)]
    out = []
    for _ in range(steps):
        parts = [next(it) for it in iters]
        out.append(
            {
                k: np.stack([p[k] for p in parts], 1).reshape(-1, *parts[0][k].shape[1:])
                for k in parts[0]
            }
        )
    for it in iters:
        it.close()
    return out


def test_arrayrecord_batches_are_pixel_equal_on_1_and_2_processes(shards, tmp_path):
    pytest.importorskip("array_record")
    from tools.wds_to_arrayrecord import convert

    convert(str(shards), str(tmp_path), workers=1, progress=False)
    config = tiny_config(**{"data.source": "arrayrecord", "data.path": str(tmp_path), **AUGMENT})
    one, two = global_batches(config, 1, 3), global_batches(config, 2, 3)
    for a, b in zip(one, two):
        np.testing.assert_array_equal(a["image"], b["image"])
        np.testing.assert_array_equal(a["text"], b["text"])
    # The crops are random: the same image in two epochs is cut differently.
    assert not np.array_equal(one[0]["image"], one[-1]["image"])


def test_synthetic_batches_are_equal_on_1_and_2_processes():
    config = tiny_config(**{"data.modalities.image.size": 12, **AUGMENT})  # crops 16 -> 12
    with config.unlocked():
        config.data.synthetic.num_train = 64
    one, two = global_batches(config, 1, 2), global_batches(config, 2, 2)
    for a, b in zip(one, two):
        np.testing.assert_array_equal(a["image"], b["image"])


def test_webdataset_examples_are_pixel_equal_whichever_process_reads_them(shards):
    """Streaming: processes read different shards, so batches differ; each example's
    augmented pixels (by its key) are the same."""
    config = tiny_config(**{"data.source": "wds", "data.path": str(shards), **AUGMENT})
    source = build_source(config.data, "train", config.seed)
    prepare = Prepare(modalities.build_readers(config))

    def pixels(processes: int, seed: int = config.seed) -> dict[str, bytes]:
        out = {}
        for p in range(processes):
            for n, raw in zip(range(48 // processes), source.stream(config.seed, p, processes)):
                example = pipeline.prepare_streamed(prepare, seed, raw, n)
                out[raw["__key__"]] = example["image"].tobytes()
        return out

    one, two = pixels(1), pixels(2)
    assert len(one) == len(two) == 48
    assert one == two
    # The crops are random: another seed cuts the same examples differently.
    other = pixels(1, seed=config.seed + 1)
    assert sum(one[k] != other[k] for k in one) > 40
