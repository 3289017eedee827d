r"""Writes the synthetic source as webdataset tar shards in img2dataset's layout.

  python tools/make_synthetic_shards.py --out=/tmp/shards --shards=4 --per_shard=1000
  python -m mmjax.main --config=configs/demo.py --config.data.source=wds \
      --config.data.path=/tmp/shards --config.data.modalities.image.size=32

Each shard `00000.tar` holds samples `000000000.jpg` / `.txt` / `.json` (the key is the
shard number then the sample number, as img2dataset names them), and `00000_stats.json`
lies beside it. For tests and for trying the real-data path without a download;
`--corrupt`, `--empty_captions`, `--bad_utf8`, `--missing_captions` plant bad samples (an
exact number, reported with their keys) to exercise the pipeline's skipping.
"""

import argparse
import io
import json
import os
import sys
import tarfile
import time
from pathlib import Path

import numpy as np
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from mmjax.data.synthetic import SyntheticSource

DEFECTS = ("corrupt", "empty_captions", "bad_utf8", "missing_captions")


def jpeg(image: np.ndarray, quality: int = 95) -> bytes:
    out = io.BytesIO()
    Image.fromarray(image).save(out, "JPEG", quality=quality)
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


def write_shards(
    out: str,
    shards: int,
    per_shard: int,
    image_size: int = 64,
    seed: int = 0,
    **fractions: float,
) -> dict[str, list[str]]:
    """Writes the shards; returns {defect: [keys]} of the bad samples it planted."""
    os.makedirs(out, exist_ok=True)
    source = SyntheticSource("train", shards * per_shard, image_size, seed)
    planted = plant(shards * per_shard, fractions, seed)
    report: dict[str, list[str]] = {d: [] for d in DEFECTS}
    for shard in range(shards):
        start, mtime = time.time(), 1_700_000_000.0
        with tarfile.open(os.path.join(out, f"{shard:05d}.tar"), "w") as tar:
            for j in range(per_shard):
                index = shard * per_shard + j
                key = f"{shard:05d}{j:04d}"
                example = source[index]
                image, caption = jpeg(example["image"]), example["text"].encode("utf-8")
                defect = planted.get(index)
                if defect == "corrupt":
                    image = corrupt(image, index)
                elif defect == "empty_captions":
                    caption = b" \n" if index % 2 else b""
                elif defect == "bad_utf8":
                    caption = b"caf\xe9 \xff\xfe" + caption
                if defect:
                    report[defect].append(key)
                meta = {
                    "url": f"synthetic://{seed}/{index}",
                    "key": key,
                    "status": "success",
                    "error_message": None,
                    "width": image_size,
                    "height": image_size,
                    "original_width": image_size,
                    "original_height": image_size,
                    "caption": example["text"],
                }
                _add(tar, f"{key}.jpg", image, mtime)
                if defect != "missing_captions":
                    _add(tar, f"{key}.txt", caption, mtime)
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
    return report


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", required=True)
    parser.add_argument("--shards", type=int, default=4)
    parser.add_argument("--per_shard", type=int, default=1000)
    parser.add_argument("--image_size", type=int, default=64)
    parser.add_argument("--seed", type=int, default=0)
    for defect in DEFECTS:
        parser.add_argument(f"--{defect}", type=float, default=0.0, help="fraction of samples")
    args = parser.parse_args()
    fractions = {d: getattr(args, d) for d in DEFECTS}
    report = write_shards(
        args.out, args.shards, args.per_shard, args.image_size, args.seed, **fractions
    )
    total = args.shards * args.per_shard
    print(f"Wrote {total} samples in {args.shards} shards to {args.out}.")
    for defect, keys in report.items():
        if keys:
            print(
                f"  planted {len(keys)} {defect}: {', '.join(keys[:5])}{' ...' * (len(keys) > 5)}"
            )


if __name__ == "__main__":
    main()
