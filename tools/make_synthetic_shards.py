r"""Writes the synthetic source as webdataset tar shards in img2dataset's layout.

  python tools/make_synthetic_shards.py --out=/tmp/shards --shards=4 --per_shard=1000
  python -m mmjax.main --config=configs/demo.py --config.data.source=wds \
      --config.data.path=/tmp/shards --config.data.modalities.image.size=32
  python tools/make_synthetic_shards.py --out=/tmp/mm --modalities=image,text,audio,imu,video \
      --image_size=32 --bad_audio_rate=0.01 --bad_array_rate=0.01

Each shard `00000.tar` holds samples `000000000.jpg` / `.txt` / `.json` (the key is the
shard number then the sample number, as img2dataset names them), and `00000_stats.json`
lies beside it. With `--modalities` naming more than image and text, samples come from
the multimodal source (every modality shows the sample's class) and add `.flac` (or
`.wav`, `--audio_format`), `.imu.npy` (float32 [T, 6]), `.video.npy` (uint8 [F, H, W, 3])
and `.cls` (the class index, ASCII); image and text alone are today's image source.

For tests and for trying the real-data path without a download, bad samples can be
planted at given rates (an exact number, disjoint, chosen from the seed): `--corrupt`
(JPEG cut short or random bytes), `--empty_captions`, `--bad_utf8`, `--missing_captions`,
`--bad_audio_rate` (FLAC / WAV cut short), `--bad_array_rate` (an .npy of the wrong shape:
one row or frame short). The counts and keys are printed and written to `planted.json`.
"""

import argparse
import dataclasses
import io
import json
import os
import sys
import tarfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from mmjax import errors
from mmjax.data.synthetic import CLASS_NAMES, SyntheticSource
from mmjax.data.synthetic_multimodal import ALL_MODALITIES, MultimodalSyntheticSource

# Defect -> (the modalities it can spoil, its flag). The order fixes which samples get which.
DEFECTS = {
    "corrupt": (("image",), "corrupt"),
    "empty_captions": (("text",), "empty_captions"),
    "bad_utf8": (("text",), "bad_utf8"),
    "missing_captions": (("text",), "missing_captions"),
    "bad_audio": (("audio",), "bad_audio_rate"),
    "bad_array": (("imu", "video"), "bad_array_rate"),
}
IMAGE_TEXT = ("image", "text")  # today's image source, unchanged
PLANTED = "planted.json"


def jpeg(image: np.ndarray, quality: int = 95) -> bytes:
    out = io.BytesIO()
    Image.fromarray(image).save(out, "JPEG", quality=quality)
    return out.getvalue()


def sound(audio: np.ndarray, sample_rate: int, audio_format: str) -> bytes:
    """16-bit PCM FLAC or WAV bytes (soundfile bundles libsndfile)."""
    import soundfile

    out = io.BytesIO()
    soundfile.write(out, audio, sample_rate, format=audio_format.upper(), subtype="PCM_16")
    return out.getvalue()


def npy(array: np.ndarray) -> bytes:
    out = io.BytesIO()
    np.save(out, array, allow_pickle=False)
    return out.getvalue()


def corrupt(data: bytes, i: int) -> bytes:
    """Alternately a JPEG cut short (a truncated download) and random bytes."""
    if i % 2 == 0:
        return data[: len(data) // 2]
    return np.random.default_rng(i).integers(0, 256, len(data), np.uint8).tobytes()


def _add(tar: tarfile.TarFile, name: str, data: bytes, mtime: float) -> None:
    info = tarfile.TarInfo(name)
    info.size, info.mtime, info.mode = len(data), mtime, 0o444
    info.uname = info.gname = "bigdata"
    tar.addfile(info, io.BytesIO(data))


def plant(total: int, fractions: dict[str, float], seed: int) -> dict[int, str]:
    """Global sample index -> defect, round(fraction * total) of each, disjoint."""
    order = np.random.default_rng([seed, 7]).permutation(total)
    planted, at = {}, 0
    for defect in DEFECTS:
        n = round(fractions.get(defect, 0.0) * total)
        planted.update({int(i): defect for i in order[at : at + n]})
        at += n
    return planted


@dataclasses.dataclass(frozen=True)
class Layout:
    """What a sample holds: modalities, and how its audio is encoded."""

    modalities: tuple[str, ...] = IMAGE_TEXT
    audio_format: str = "flac"
    sample_rate: int = 8000

    @property
    def multimodal(self) -> bool:
        return set(self.modalities) != set(IMAGE_TEXT)


def _source(layout: Layout, total: int, image_size: int, seed: int):
    if not layout.multimodal:
        return SyntheticSource("train", total, image_size, seed)
    return MultimodalSyntheticSource(
        "train",
        total,
        seed,
        layout.modalities,
        image_size=image_size,
        video_size=image_size,
        sample_rate=layout.sample_rate,
    )


def _examples(source, start: int, count: int, chunk: int = 256) -> Iterator[dict]:
    """Examples start, start + 1, ...: drawn `chunk` at a time where the source can batch."""
    if not hasattr(source, "batch"):
        yield from (source[i] for i in range(start, start + count))
        return
    for at in range(start, start + count, chunk):
        batch = source.batch(range(at, min(at + chunk, start + count)))
        for j in range(len(batch["label"])):
            yield {k: v[j] for k, v in batch.items()}


def _fields(example: dict, layout: Layout) -> dict[str, bytes]:
    """A sample's encoded files by extension."""
    encoders: dict[str, tuple[str, Callable]] = {
        "image": ("jpg", jpeg),
        "text": ("txt", lambda t: t.encode("utf-8")),
        "audio": (layout.audio_format, lambda a: sound(a, layout.sample_rate, layout.audio_format)),
        "imu": ("imu.npy", npy),
        "video": ("video.npy", npy),
    }
    fields = {encoders[m][0]: encoders[m][1](example[m]) for m in layout.modalities}
    if layout.multimodal:
        fields["cls"] = str(int(example["label"])).encode()
    return fields


def _spoil(fields: dict[str, bytes], example: dict, defect: str, index: int, layout: Layout):
    """Plants `defect` in a sample's files (in place)."""
    if defect == "corrupt":
        fields["jpg"] = corrupt(fields["jpg"], index)
    elif defect == "empty_captions":
        fields["txt"] = b" \n" if index % 2 else b""
    elif defect == "bad_utf8":
        fields["txt"] = b"caf\xe9 \xff\xfe" + fields["txt"]
    elif defect == "missing_captions":
        del fields["txt"]
    elif defect == "bad_audio":  # a truncated download
        audio = fields[layout.audio_format]
        fields[layout.audio_format] = audio[: len(audio) // 2]
    elif defect == "bad_array":  # one row or frame short: alternately imu and video if both
        arrays = [m for m in ("imu", "video") if m in layout.modalities]
        modality = arrays[index % len(arrays)]
        fields[f"{modality}.npy"] = npy(example[modality][:-1])


class ShardSpecError(errors.UserError, ValueError):
    """Shards that cannot be written as asked."""


def _check(layout: Layout, fractions: dict[str, float]) -> None:
    unknown = set(layout.modalities) - set(ALL_MODALITIES)
    if unknown or not layout.modalities:
        raise ShardSpecError(f"Unknown modalities {sorted(unknown)}; known: {ALL_MODALITIES}.")
    if layout.audio_format not in ("flac", "wav"):
        raise ShardSpecError(f"audio_format must be flac or wav, not {layout.audio_format!r}.")
    for defect, fraction in fractions.items():
        if defect not in DEFECTS:
            raise ShardSpecError(f"Unknown defect {defect!r}; known: {', '.join(DEFECTS)}.")
        needs = DEFECTS[defect][0]
        if not 0 <= fraction <= 1:
            raise ShardSpecError(f"{defect}: a fraction in [0, 1], not {fraction}.")
        if fraction and not set(needs) & set(layout.modalities):
            raise ShardSpecError(f"{defect} spoils {' or '.join(needs)}, which is not written.")


def write_shards(
    out: str,
    shards: int,
    per_shard: int,
    image_size: int = 64,
    seed: int = 0,
    modalities: tuple[str, ...] = IMAGE_TEXT,
    audio_format: str = "flac",
    **fractions: float,
) -> dict[str, list[str]]:
    """Writes the shards and `planted.json`; returns {defect: [keys]} of the bad samples."""
    layout = Layout(tuple(modalities), audio_format)
    _check(layout, fractions)
    os.makedirs(out, exist_ok=True)
    total = shards * per_shard
    source = _source(layout, total, image_size, seed)
    planted = plant(total, fractions, seed)
    report: dict[str, list[str]] = {d: [] for d in DEFECTS}
    for shard in range(shards):
        start, mtime = time.time(), 1_700_000_000.0
        examples = _examples(source, shard * per_shard, per_shard)
        with tarfile.open(os.path.join(out, f"{shard:05d}.tar"), "w") as tar:
            for j, example in enumerate(examples):
                index = shard * per_shard + j
                key = f"{shard:05d}{j:04d}"
                fields = _fields(example, layout)
                defect = planted.get(index)
                if defect:
                    _spoil(fields, example, defect, index, layout)
                    report[defect].append(key)
                meta = {"url": f"synthetic://{seed}/{index}", "key": key, "status": "success"}
                meta["error_message"] = None
                if "image" in layout.modalities:
                    meta.update(dict.fromkeys(("width", "height"), image_size))
                    meta.update(dict.fromkeys(("original_width", "original_height"), image_size))
                if "text" in layout.modalities:
                    meta["caption"] = example["text"]
                if layout.multimodal:
                    meta["label"] = int(example["label"])
                    meta["class_name"] = CLASS_NAMES[int(example["label"])]
                for ext, data in fields.items():
                    _add(tar, f"{key}.{ext}", data, mtime)
                _add(tar, f"{key}.json", json.dumps(meta).encode(), mtime)
        stats = {
            "count": per_shard,
            "successes": per_shard,
            "failed_to_download": 0,
            "failed_to_resize": 0,
            "duration": time.time() - start,
            "status_dict": {"success": per_shard},
        }
        with open(os.path.join(out, f"{shard:05d}_stats.json"), "w") as f:
            json.dump(stats, f, indent=4)
    summary = {
        "samples": total,
        "shards": shards,
        "seed": seed,
        "modalities": list(layout.modalities),
        "planted": {d: len(keys) for d, keys in report.items()},
        "keys": report,
    }
    with open(os.path.join(out, PLANTED), "w") as f:
        json.dump(summary, f, indent=2)
    return report


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", required=True)
    parser.add_argument("--shards", type=int, default=4)
    parser.add_argument("--per_shard", type=int, default=1000)
    parser.add_argument("--image_size", type=int, default=64, help="also the video's frames")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--modalities", default=",".join(IMAGE_TEXT), help=", ".join(ALL_MODALITIES)
    )
    parser.add_argument("--audio_format", default="flac", choices=("flac", "wav"))
    for defect, (_, flag) in DEFECTS.items():
        parser.add_argument(f"--{flag}", type=float, default=0.0, dest=defect, help="a fraction")
    args = parser.parse_args()
    fractions = {d: getattr(args, d) for d in DEFECTS}
    modalities = tuple(m.strip() for m in args.modalities.split(",") if m.strip())
    report = write_shards(
        args.out,
        args.shards,
        args.per_shard,
        args.image_size,
        args.seed,
        modalities,
        args.audio_format,
        **fractions,
    )
    total = args.shards * args.per_shard
    print(f"Wrote {total} samples ({', '.join(modalities)}) in {args.shards} shards to {args.out}.")
    for defect, keys in report.items():
        if keys:
            print(
                f"  planted {len(keys)} {defect}: {', '.join(keys[:5])}{' ...' * (len(keys) > 5)}"
            )
    counts = ", ".join(f"{d} {len(k)}" for d, k in report.items())
    print(f"Planted counts ({counts}) and keys in {os.path.join(args.out, PLANTED)}.")


if __name__ == "__main__":
    errors.run(main)
