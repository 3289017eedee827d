"""ArrayRecord: the conversion tool's summary, the random-access source, global shuffle,
exact resume, skipped damaged records, and seeking from the step alone."""

import io
import os
import tarfile

import grain
import numpy as np
import pytest

from mmjax.data import records
from mmjax.data.sources import build_source
from tests.data_shards import (
    assert_same_batches,
    iterator,
    json_roundtrip,
    shard_keys,
    write_shards,
)
from tests.helpers import tiny_config
from tools.wds_to_arrayrecord import convert

pytest.importorskip("array_record")


def ar_config(path, **overrides):
    return tiny_config(**{"data.source": "arrayrecord", "data.path": str(path), **overrides})


@pytest.fixture(scope="module")
def converted(tmp_path_factory):
    shards = tmp_path_factory.mktemp("shards")
    planted = write_shards(
        str(shards), 3, 20, image_size=16, corrupt=0.1, empty_captions=0.05, bad_utf8=0.05
    )
    out = tmp_path_factory.mktemp("ar")
    summary = convert(str(shards), str(out), workers=1, progress=False)
    return shards, out, planted, summary


def test_conversion_keeps_good_samples_and_reports_skips(converted):
    shards, out, planted, summary = converted
    assert summary["skipped"] == {
        "bad_image": len(planted["corrupt"]),
        "empty_text": len(planted["empty_captions"]),
        "bad_text": len(planted["bad_utf8"]),
    }
    bad = {k for keys in planted.values() for k in keys}
    good = [
        k
        for p in sorted(os.listdir(shards))
        if p.endswith(".tar")
        for k in shard_keys(str(shards / p))
    ]
    good = [k for k in good if k not in bad]
    assert summary["written"] == len(good) == 60 - 12
    source = build_source(ar_config(out).data, "train", 0)
    assert len(source) == len(good)
    assert sorted(source[i]["__key__"] for i in range(len(source))) == sorted(good)
    # The record holds the tar's files unchanged.
    with tarfile.open(shards / "00000.tar") as t:
        caption = t.extractfile(f"{source[0]['__key__']}.txt").read()
    assert source[0]["txt"] == caption


def test_records_round_trip_and_damage_is_detected():
    sample = {"__key__": "k", "jpg": b"\xff\xd8x", "txt": "é".encode(), "json": b"{}"}
    assert records.decode(records.encode(sample)) == sample
    for broken in (records.encode(sample)[:-1], b"\x00", b"\xff\xff\xff\xff{}"):
        with pytest.raises(ValueError, match="damaged"):
            records.decode(broken)


def test_global_shuffle_and_exact_resume(converted):
    _, out, _, _ = converted
    config = ar_config(out)
    it = iterator(config)
    states, batches = [], []
    for _ in range(8):  # 48 records, 3 batches an epoch: crosses epochs
        states.append(json_roundtrip(it.get_state()))
        batches.append(next(it))
    first_epoch = np.concatenate([b["text"] for b in batches[:3]])
    assert len({t.tobytes() for t in first_epoch}) > 40  # a permutation, not repeats
    assert not np.array_equal(batches[0]["image"], batches[3]["image"])  # reshuffled
    for k in (1, 5):
        fresh = iterator(config)
        fresh.set_state(states[k])
        assert_same_batches([next(fresh) for _ in range(8 - k)], batches[k:])
        fresh.close()
    # Another process layout: the position comes from the step (no record was skipped).
    sought = iterator(config)
    sought.seek(5)
    assert_same_batches([next(sought)], [batches[5]])
    it.close()
    sought.close()


def test_damaged_records_and_bad_images_are_skipped_and_counted(tmp_path):
    from array_record.python.array_record_module import ArrayRecordWriter
    from PIL import Image

    def jpeg(v: int) -> bytes:
        out = io.BytesIO()
        Image.fromarray(np.full((16, 16, 3), v, np.uint8)).save(out, "JPEG")
        return out.getvalue()

    writer = ArrayRecordWriter(str(tmp_path / "x.array_record"), "group_size:1")
    kinds = []
    for i in range(64):
        kind = ("damaged", "bad_image", "missing_text", "good", "good", "good", "good", "good")[
            i % 8
        ]
        sample = {"__key__": str(i), "jpg": jpeg(i), "txt": f"caption {i}".encode()}
        if kind == "bad_image":
            sample["jpg"] = sample["jpg"][:40]
        if kind == "missing_text":
            del sample["txt"]
        data = records.encode(sample)
        writer.write(data[:-3] if kind == "damaged" else data)
        kinds.append(kind)
    writer.close()
    it = iterator(ar_config(tmp_path))
    for _ in range(3):  # crosses into the second epoch (40 good records an epoch)
        next(it)
    # Which records were read: the global shuffle's order, up to the raw batches pulled.
    state = it.get_state()
    pulled = state["next_index"] + (1 if state["pending_offset"] else 0)
    order = grain.MapDataset.source(list(range(64))).shuffle(seed=0).repeat(None)
    read = [kinds[order[j]] for j in range(16 * pulled)]
    assert it.skipped["bad_record"] == read.count("damaged") > 0
    assert it.skipped["bad_image"] == read.count("bad_image") > 0
    assert it.skipped["missing_text"] == read.count("missing_text") > 0
    assert read.count("good") >= 48
    it.close()
