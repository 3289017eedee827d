"""Decoding in worker processes: the same batches as threads, and exact resume (with bad
records, mid-batch) through a JSON round trip of the state."""

import pytest

from tests.data_shards import (
    assert_same_batches,
    iterator,
    json_roundtrip,
    wds_config,
    write_shards,
)


@pytest.fixture(scope="module")
def dirty(tmp_path_factory):
    out = tmp_path_factory.mktemp("dirty")
    write_shards(str(out), shards=4, per_shard=12, image_size=16, corrupt=0.1)
    return out


def test_worker_processes_give_the_threads_batches_and_resume_exactly(dirty):
    threads = iterator(wds_config(dirty))
    want = [next(threads) for _ in range(6)]
    threads.close()
    config = wds_config(dirty, **{"data.worker_processes": 2})
    it = iterator(config)
    got, states = [], []
    for _ in range(6):
        states.append(json_roundtrip(it.get_state()))
        got.append(next(it))
    it.close()
    assert_same_batches(got, want)
    fresh = iterator(config)
    fresh.set_state(states[3])
    assert_same_batches([next(fresh) for _ in range(3)], want[3:])
    fresh.close()
