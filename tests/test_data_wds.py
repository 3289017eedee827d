"""Webdataset shards through the whole pipeline: sharding over processes, exact resume,
unreadable shards, shard-granularity seek, and a training run on planted bad data."""

import json
import logging
import os

import numpy as np
import pytest

from mmjax.data import wds
from mmjax.data.sources import build_source
from tests.data_shards import (
    assert_same_batches,
    decoded_images,
    iterator,
    json_roundtrip,
    shard_keys,
    wds_config,
    write_shards,
)

# Crops that keep the whole 16 px picture, decoded by Pillow: each output image is the
# shard's JPEG decoded, so the test can tell which sample (and shard) it came from.
IDENTITY = {
    "data.modalities.image.crop_scale": (1.0, 1.0),
    "data.modalities.image.crop_ratio": (1.0, 1.0),
    "data.modalities.image.decoder": "pil",
}


@pytest.fixture(scope="module")
def clean(tmp_path_factory):
    out = tmp_path_factory.mktemp("clean")
    write_shards(str(out), shards=4, per_shard=20, image_size=16)
    return out


@pytest.fixture(scope="module")
def dirty(tmp_path_factory):
    out = tmp_path_factory.mktemp("dirty")
    planted = write_shards(
        str(out), shards=4, per_shard=20, image_size=16, corrupt=0.1, empty_captions=0.05
    )
    return out, planted


@pytest.mark.parametrize("processes", [1, 2, 3])
def test_processes_read_disjoint_shards_covering_all(clean, processes):
    source = build_source(wds_config(clean).data, "train", 0)
    keys = {p: shard_keys(p) for p in source.shards}
    seen = []
    for p in range(processes):
        mine = [source.shards[i] for i in wds.process_shards(4, 0, 0, 0, p, processes)]
        it = iter(source.stream(seed=0, process_index=p, process_count=processes))
        got = [next(it)["__key__"] for _ in range(20 * len(mine))]
        assert {k.split(":")[0] for k in got} == set(mine)  # only its own shards
        seen += got
    assert len(seen) == len(set(seen)) == 80  # disjoint, and the epoch is complete
    assert {k.split(":")[1] for k in seen} == {k for ks in keys.values() for k in ks}


def _trace(batches: list[dict], lookup: dict[bytes, str]) -> list[str]:
    return [lookup[img.tobytes()] for b in batches for img in b["image"]]


def test_each_epoch_reads_every_sample_once_and_processes_split_it(clean):
    lookup = {}
    for p in sorted(os.listdir(clean)):
        if p.endswith(".tar"):
            lookup.update(decoded_images(str(clean / p)))
    config = wds_config(clean, **IDENTITY)
    one = iterator(config)
    epoch = _trace([next(one) for _ in range(5)], lookup)  # 80 samples = 5 batches of 16
    assert sorted(epoch) == sorted(lookup.values())
    halves = [iterator(config, p, 2) for p in range(2)]
    parts = [_trace([next(h) for _ in range(5)], lookup) for h in halves]  # 8 per batch
    assert not set(parts[0]) & set(parts[1])
    assert sorted(parts[0] + parts[1]) == sorted(lookup.values())
    one.close()
    for h in halves:
        h.close()


def test_resume_is_exact_at_any_step_with_bad_data(dirty):
    path, planted = dirty
    config = wds_config(path)
    it = iterator(config)
    states, batches, counts = [], [], []
    for _ in range(15):  # 80 samples with 12 bad: about 4 batches an epoch
        states.append(json_roundtrip(it.get_state()))
        batches.append(next(it))
        counts.append(it.skipped)
    assert any(s["pending_offset"] for s in states)  # some resume mid-batch
    for k in (0, 3, 7, 12):
        fresh = iterator(config)
        fresh.set_state(states[k])
        assert_same_batches([next(fresh) for _ in range(15 - k)], batches[k:])
        assert fresh.skipped == counts[-1]
        fresh.close()
    it.close()
    # Three epochs read: three times the planted records.
    assert counts[-1]["bad_image"] >= 2 * len(planted["corrupt"])


def test_unreadable_shards_mid_run_are_logged_counted_and_skipped(tmp_path, caplog):
    write_shards(str(tmp_path), shards=4, per_shard=40, image_size=16)
    config = wds_config(tmp_path, **{"data.cycle_length": 1, "data.shuffle_buffer": 1})
    source = build_source(config.data, "train", 0)
    order = [source.shards[i] for i in wds.epoch_order(4, 0, 0)]
    it = iterator(config)
    next(it)  # the first shards are open; the last two are not yet
    with open(order[2], "r+b") as f:
        f.truncate(os.path.getsize(order[2]) // 2)
    os.remove(order[3])
    with caplog.at_level(logging.WARNING):
        for _ in range(12):  # past the end of the first epoch
            next(it)
    assert it.skipped["unreadable_shard"] >= 2  # once per epoch for each
    assert order[2] in caplog.text and order[3] in caplog.text
    it.close()


def test_path_matching_nothing_fails_at_start_naming_it(tmp_path):
    config = wds_config(tmp_path / "missing-{00000..00009}.tar")
    with pytest.raises(FileNotFoundError, match="missing-"):
        iterator(config)


def test_seek_restarts_at_shard_granularity(clean, caplog):
    lookup = {}
    for p in sorted(os.listdir(clean)):
        if p.endswith(".tar"):
            lookup.update({k: p for k in decoded_images(str(clean / p))})
    config = wds_config(clean, **IDENTITY, **{"data.cycle_length": 1})
    source = build_source(config.data, "train", 0)
    # 4 shards of 20 (from their _stats.json): whole shards done after n samples.
    assert source.start_position(0, 0) == (0, 0) and source.start_position(19, 0) == (0, 0)
    assert source.start_position(50, 0) == (0, 2)
    assert source.start_position(96, 0) == (1, 0) and source.start_position(105, 0) == (1, 1)
    it = iterator(config)
    with caplog.at_level(logging.WARNING):
        it.seek(3)  # 48 samples seen: the first 2 shards of epoch 0 are done
    assert "shard granularity" in caplog.text
    order = [os.path.basename(source.shards[i]) for i in wds.epoch_order(4, 0, 0)]
    shards = {lookup[img.tobytes()] for img in next(it)["image"]}
    assert shards <= set(order[2:])
    it.close()


def test_training_on_bad_data_counts_exactly_what_was_planted(tmp_path, caplog):
    from mmjax.train import loop

    # 400 samples, 6% corrupt JPEGs (half truncated, half garbage) and 2% empty captions.
    planted = write_shards(
        str(tmp_path / "shards"), 4, 100, image_size=20, corrupt=0.06, empty_captions=0.02
    )
    assert len(planted["corrupt"]) == 24 and len(planted["empty_captions"]) == 8
    # 368 good samples: 23 steps of 16 take exactly the first epoch (the window of 100
    # divides it, so no window spans two epochs). The counts are those of the records
    # behind the batches taken, not of what the input pipeline has read ahead.
    config = wds_config(
        tmp_path / "shards",
        **{"total_steps": 23, "log_every": 23, "data.shuffle_buffer": 100},
    )
    with caplog.at_level(logging.INFO):
        last = loop.train(config, str(tmp_path / "run"))
    assert np.isfinite(last["loss"])
    record = json.loads((tmp_path / "run" / "metrics.jsonl").read_text().splitlines()[-1])
    assert record["data_skipped/bad_image"] == 24
    assert record["data_skipped/empty_text"] == 8
    assert record["data_skipped"] == 32
    assert "bad data bad_image 24, empty_text 8" in caplog.text


def test_stop_and_resume_on_shards_matches_an_uninterrupted_run(dirty, tmp_path):
    from tests.test_resume import saved_params

    path, _ = dirty
    from mmjax.train import loop

    config = wds_config(path, total_steps=8, ckpt_every=100)
    loop.train(config, str(tmp_path / "straight"))
    loop.train(
        wds_config(path, total_steps=8, ckpt_every=100, stop_at_step=3), str(tmp_path / "resumed")
    )
    loop.train(config, str(tmp_path / "resumed"))
    straight = saved_params(str(tmp_path / "straight"), config)
    resumed = saved_params(str(tmp_path / "resumed"), config)
    import jax

    for a, b in zip(jax.tree.leaves(straight), jax.tree.leaves(resumed)):
        np.testing.assert_array_equal(a, b)


def test_a_process_left_without_shards_by_a_seek_goes_on_to_the_next_epoch(clean):
    source = build_source(wds_config(clean).data, "train", 0)
    assert wds.process_shards(4, 0, 0, 3, 1, 2) == []  # epoch 0 after 3 shards: none for p=1
    sample = next(iter(source.stream(seed=0, process_index=1, process_count=2, start=(0, 3))))
    epoch1 = {source.shards[i] for i in wds.process_shards(4, 0, 1, 0, 1, 2)}
    assert sample["__key__"].split(":")[0] in epoch1
