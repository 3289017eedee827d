"""tools/make_synthetic_shards.py with --modalities: every file of every sample, read back
with our tar reader, soundfile and numpy, equals the source's example; the planted bad
records are exactly the ones reported, in number and key."""

import io
import json
import sys

import numpy as np
import pytest
from PIL import Image

from mmjax.data import tar
from mmjax.data.synthetic_multimodal import ALL_MODALITIES, MultimodalSyntheticSource
from tools import make_synthetic_shards
from tools.make_synthetic_shards import write_shards

soundfile = pytest.importorskip("soundfile")

SHARDS, PER_SHARD, SIZE = 2, 10, 16
RATES = dict(corrupt=0.05, bad_audio=0.1, bad_array=0.15)  # 1, 2 and 3 of 20 samples


def read_samples(out) -> dict[str, dict]:
    samples = {}
    for shard in range(SHARDS):
        with open(out / f"{shard:05d}.tar", "rb") as f:
            samples.update({s["__key__"]: s for s, _ in tar.samples(f)})
    return samples


def jpeg(image: np.ndarray) -> bytes:
    """Pillow's JPEG at quality 95, as img2dataset-style shards hold."""
    out = io.BytesIO()
    Image.fromarray(image).save(out, "JPEG", quality=95)
    return out.getvalue()


def decodes(data: bytes, read) -> bool:
    try:
        read(io.BytesIO(data))
        return True
    except Exception:
        return False


@pytest.mark.parametrize("audio_format", ["flac", "wav"])
def test_multimodal_shards_hold_the_source_and_exactly_the_planted_defects(tmp_path, audio_format):
    report = write_shards(
        str(tmp_path), SHARDS, PER_SHARD, SIZE, 3, ALL_MODALITIES, audio_format, **RATES
    )
    summary = json.loads((tmp_path / "planted.json").read_text())
    assert summary["samples"] == SHARDS * PER_SHARD and summary["modalities"] == list(
        ALL_MODALITIES
    )
    assert summary["keys"] == report
    for defect, rate in RATES.items():
        assert summary["planted"][defect] == len(report[defect]) == round(rate * 20)
    assert summary["planted"]["empty_captions"] == 0

    source = MultimodalSyntheticSource(
        "train", SHARDS * PER_SHARD, 3, image_size=SIZE, video_size=SIZE
    )
    expected = source.batch(range(SHARDS * PER_SHARD))
    samples = read_samples(tmp_path)
    assert len(samples) == SHARDS * PER_SHARD
    found = {"corrupt": [], "bad_audio": [], "bad_array": []}
    for key, sample in sorted(samples.items()):
        i = int(key[:5]) * PER_SHARD + int(key[5:])
        assert set(sample) == {
            "__key__",
            "jpg",
            "txt",
            audio_format,
            "imu.npy",
            "video.npy",
            "cls",
            "json",
        }
        assert sample["txt"].decode() == expected["text"][i]
        assert int(sample["cls"]) == expected["label"][i] == json.loads(sample["json"])["label"]

        if decodes(sample["jpg"], lambda f: Image.open(f).load()):
            assert sample["jpg"] == jpeg(expected["image"][i])
        else:
            found["corrupt"].append(key)

        try:
            audio, rate = soundfile.read(io.BytesIO(sample[audio_format]), dtype="float32")
            complete = audio.shape == expected["audio"][i].shape
        except Exception:
            complete = False  # a cut FLAC does not decode; a cut WAV reads short
        if complete:
            assert rate == 8000
            np.testing.assert_allclose(audio, expected["audio"][i], atol=1.5 / 32768)
        else:
            found["bad_audio"].append(key)

        arrays = {m: np.load(io.BytesIO(sample[f"{m}.npy"])) for m in ("imu", "video")}
        if all(arrays[m].shape == expected[m][i].shape for m in arrays):
            for m, array in arrays.items():
                assert array.dtype == expected[m].dtype
                np.testing.assert_array_equal(array, expected[m][i])
        else:
            found["bad_array"].append(key)
    assert found == {d: sorted(report[d]) for d in found}


def test_defects_are_reproducible_from_the_seed_and_need_their_modality(tmp_path):
    a = write_shards(
        str(tmp_path / "a"), 2, 10, SIZE, 5, ("audio", "imu"), **RATES | {"corrupt": 0}
    )
    b = write_shards(
        str(tmp_path / "b"), 2, 10, SIZE, 5, ("audio", "imu"), **RATES | {"corrupt": 0}
    )
    c = write_shards(
        str(tmp_path / "c"), 2, 10, SIZE, 6, ("audio", "imu"), **RATES | {"corrupt": 0}
    )
    assert a == b and a != c
    samples = read_samples(tmp_path / "a")
    assert {k for s in samples.values() for k in s} == {"__key__", "flac", "imu.npy", "cls", "json"}
    with pytest.raises(ValueError, match="bad_audio"):
        write_shards(str(tmp_path / "d"), 1, 4, SIZE, 0, ("image", "text"), bad_audio=0.5)
    with pytest.raises(ValueError, match="smell"):
        write_shards(str(tmp_path / "d"), 1, 4, SIZE, 0, ("image", "smell"))


def test_command_line_prints_the_planted_counts(tmp_path, monkeypatch, capsys):
    argv = [
        "make_synthetic_shards.py",
        f"--out={tmp_path}",
        "--shards=1",
        "--per_shard=20",
        f"--image_size={SIZE}",
        "--modalities=text,video",
        "--bad_array_rate=0.1",
    ]
    monkeypatch.setattr(sys, "argv", argv)
    make_synthetic_shards.main()
    printed = capsys.readouterr().out
    assert "planted 2 bad_array" in printed and "bad_audio 0" in printed
    assert json.loads((tmp_path / "planted.json").read_text())["planted"]["bad_array"] == 2
