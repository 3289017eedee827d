"""Audio, IMU and video from webdataset shards and from the batched synthetic source,
through the real pipeline (`pipeline.train_iterator`): planted bad records skipped and
counted exactly by reason, and stop-and-resume exact, time crops included."""

import ml_collections
import numpy as np
import pytest

from mmjax import config as config_lib
from mmjax.data import modalities, pipeline, tar
from mmjax.data.examples import Prepare
from mmjax.data.skipped import Skipped
from mmjax.data.sources import build_source
from tests.data_shards import assert_same_batches, iterator, json_roundtrip, wds_config
from tests.helpers import tiny_config
from tools.make_synthetic_shards import write_shards

pytest.importorskip("soundfile")

SHARDS, PER_SHARD, SIZE = 4, 20, 16
WRITTEN = ("audio", "imu", "video")  # and .cls


def with_modalities(config: ml_collections.ConfigDict, **entries) -> ml_collections.ConfigDict:
    """`config` reading exactly the modalities `entries` (name -> modality config)."""
    with config.unlocked():
        config.data.modalities = ml_collections.ConfigDict(entries)
    return config


def shard_modalities(audio_seconds: float = 1.0, imu_length: int = 128, **fields):
    """Readers for the shards: 8 kHz audio, IMU [T, 6], 8 frames of 16 px, the class;
    short records are skipped (the planted bad arrays are one row or frame short)."""
    return dict(
        audio=config_lib.modality(
            "audio", sample_rate=8000, clip_seconds=audio_seconds, pad_short=False
        ),
        imu=config_lib.modality("timeseries", length=imu_length, pad_short=False),
        video=config_lib.modality("video", frames=8, stride=1, size=SIZE, pad_short=False),
        label=config_lib.modality("label"),
        **fields,
    )


def planted_reasons(planted: dict[str, list[str]]) -> dict[str, set[str]]:
    """Skip reason -> keys the writer spoilt: cut audio is bad; a bad array is one row
    (IMU, even sample index) or one frame (video, odd) short."""
    short = {0: set(), 1: set()}
    for key in planted["bad_array"]:
        short[(int(key[:5]) * PER_SHARD + int(key[5:])) % 2].add(key)
    return {"bad_audio": set(planted["bad_audio"]), "short_imu": short[0], "short_video": short[1]}


@pytest.fixture(scope="module", params=["flac", "wav"])
def dirty(request, tmp_path_factory):
    out = tmp_path_factory.mktemp(f"mm_{request.param}")
    planted = write_shards(
        str(out), SHARDS, PER_SHARD, SIZE, 1, WRITTEN, request.param, bad_audio=0.1, bad_array=0.1
    )
    return out, planted_reasons(planted)


def test_readers_skip_exactly_the_planted_records(dirty):
    path, expected = dirty
    config = with_modalities(wds_config(path), **shard_modalities())
    prepare = Prepare(modalities.build_readers(config, train=True))
    found = {}
    for shard in sorted(path.glob("*.tar")):
        with open(shard, "rb") as f:
            for i, (sample, _) in enumerate(tar.samples(f)):
                out = prepare(sample, np.random.default_rng(i))
                if isinstance(out, Skipped):
                    found.setdefault(out.reason, set()).add(sample["__key__"])
                else:
                    assert out["audio"].shape == (8000,) and out["imu"].shape == (128, 6)
                    assert out["video"].shape == (8, SIZE, SIZE, 3)
    assert found == expected and sum(map(len, found.values())) == 16


def test_training_counts_the_planted_records_per_reason(dirty):
    path, expected = dirty
    config = with_modalities(wds_config(path), **shard_modalities())
    it = iterator(config)
    # 80 samples, 16 bad: the 64 good ones are 4 batches of 16, exactly one epoch (the
    # shuffle window of 40 divides it, so no window reaches into the next epoch).
    labels = np.concatenate([next(it)["label"] for _ in range(4)])
    assert len(labels) == 64
    counts = pipeline.skip_counts(it)
    it.close()
    want = {f"data_skipped/{r}": float(len(keys)) for r, keys in expected.items()}
    assert {k: v for k, v in counts.items() if v and k != "data_skipped"} == want
    assert counts["data_skipped"] == 16.0
    assert set(counts) == {f"data_skipped/{r}" for r in modalities.skip_reasons(config)} | {
        "data_skipped"
    }


def test_stop_and_resume_on_audio_and_imu_shards_with_time_crops_is_exact(dirty):
    path, _ = dirty
    # Half-second windows of the 1 s clips and 64 of the 128 IMU rows: random in training.
    config = with_modalities(
        wds_config(path, **{"data.num_threads": 2}), **shard_modalities(0.5, 64)
    )
    it = iterator(config)
    states, batches = [], []
    for _ in range(8):  # 2 epochs
        states.append(json_roundtrip(it.get_state()))
        batches.append(next(it))
    counts = it.skipped
    it.close()
    assert any(s["pending_offset"] for s in states)  # some resume mid-batch
    crops = {b["audio"][0, :4].tobytes() for b in batches}
    assert len(crops) == len(batches)  # the windows move
    for k in (2, 5):
        fresh = iterator(config)
        fresh.set_state(states[k])
        assert_same_batches([next(fresh) for _ in range(8 - k)], batches[k:])
        assert fresh.skipped == counts
        fresh.close()
    # 64 IMU rows fit in the 127 of a planted short record: only the videos are short.
    assert counts["bad_audio"] >= 8 and counts["short_video"] >= 4 and counts["short_imu"] == 0


# ------------------------------------------------------------- the batched synthetic path


def synthetic_config(**overrides) -> ml_collections.ConfigDict:
    """Tiny model; the synthetic source makes image, text, audio, imu and video."""
    config = tiny_config(**{"data.synthetic.num_train": 60, "batch_size": 8, **overrides})
    m = config.data.modalities
    return with_modalities(
        config,
        image=m.image,
        text=m.text,
        audio=config_lib.modality("audio", sample_rate=4000, clip_seconds=0.25),
        imu=config_lib.modality("timeseries", length=32),
        video=config_lib.modality("video", frames=2, stride=2, size=8),
        label=config_lib.modality("label"),
    )


def test_batched_reads_give_the_records_of_one_by_one_reads():
    config = synthetic_config()
    source = build_source(config.data, "train", config.seed)
    assert pipeline.source_kind(source) == "batched"
    # These readers draw nothing (every window is the whole record), so the random-access
    # path, which reads source[i] one at a time, must give the very same batches.
    prepare = Prepare(modalities.build_readers(config, train=True))
    for processes in (1, 2):
        for p in range(processes):
            batched, one_by_one = (
                pipeline.READERS.get(kind)(source, prepare, config, p, processes)(0)
                for kind in ("batched", "random_access")
            )
            for _ in range(9):  # past the end of the first epoch (60 examples)
                a, b = next(batched), next(one_by_one)
                assert a.keys() == b.keys() and not a.skipped
                for k in a:
                    np.testing.assert_array_equal(a[k], b[k], err_msg=k)
            batched.close()
            one_by_one.close()


def test_process_batches_interleave_into_the_global_batch():
    config = synthetic_config()
    one = iterator(config)
    halves = [iterator(config, p, 2) for p in range(2)]
    for _ in range(3):
        whole, parts = next(one), [next(h) for h in halves]
        for k in whole:
            np.testing.assert_array_equal(whole[k][0::2], parts[0][k], err_msg=k)
            np.testing.assert_array_equal(whole[k][1::2], parts[1][k], err_msg=k)
    for it in (one, *halves):
        it.close()


def test_batched_synthetic_path_resumes_exactly_and_seeks_by_step():
    config = synthetic_config(**{"data.num_threads": 2, "data.prefetch": 2})
    it = iterator(config)
    states, batches = [], []
    for _ in range(12):  # 96 examples: into the second epoch
        states.append(json_roundtrip(it.get_state()))
        batches.append(next(it))
    it.close()
    assert batches[0]["audio"].shape == (8, 1000) and batches[0]["video"].shape == (8, 2, 8, 8, 3)
    for k in (0, 5, 9):
        fresh = iterator(config)
        fresh.set_state(states[k])
        assert_same_batches([next(fresh) for _ in range(12 - k)], batches[k:])
        fresh.close()
        seeked = iterator(config)
        seeked.seek(k)  # another process layout: placed by the step alone
        assert_same_batches([next(seeked) for _ in range(3)], batches[k : k + 3])
        seeked.close()
