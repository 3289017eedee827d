r"""Converts webdataset tar shards to ArrayRecord files, for random access and a global shuffle.

  python tools/wds_to_arrayrecord.py --src='/data/laion/{00000..00999}.tar' --out=/data/laion_ar
  python -m mmjax.main --config=configs/clip_vitb.py --config.data.source=arrayrecord \
      --config.data.path=/data/laion_ar

One `NNNNN.array_record` per shard, one record per sample (mmjax/data/records.py: the
sample's files as they were). Samples the training pipeline would skip are left out and
counted by reason (no image, undecodable image, no caption, empty or non-UTF-8 caption),
as are shards that cannot be read; a summary says how many and why, on stdout and in
`<out>/_summary.json`. Shards are converted in parallel (--workers).
"""

import argparse
import collections
import json
import os
import sys
from concurrent import futures
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from mmjax import errors
from mmjax.data import records, tar
from mmjax.data.examples import field
from mmjax.data.images import DECODERS, pick
from mmjax.data.modalities import keys_of, text_of
from mmjax.data.paths import list_files, open_file
from mmjax.data.skipped import Skipped


def check(fields: dict, image_keys, text_keys, decode) -> str | None:
    """Why the training pipeline would skip this sample, or None if it would not."""
    caption, image = field(fields, text_keys), field(fields, image_keys)
    if caption is None:
        return "missing_text"
    text = text_of(caption)
    if isinstance(text, Skipped):
        return text.reason
    if not image:
        return "missing_image"
    if decode is not None:
        try:
            decode(image)
        except Exception:  # any decoder error: the sample is skipped
            return "bad_image"
    return None


def convert_shard(src: str, out_dir: str, image_key: str, text_key: str, decoder: str) -> dict:
    """One tar -> one ArrayRecord file; returns {"written": n, "skipped": {reason: n}}."""
    from array_record.python.array_record_module import ArrayRecordWriter

    name = os.path.basename(src).removesuffix(".tar") + ".array_record"
    target = os.path.join(out_dir, name)
    decode = DECODERS.get(pick("decoder", decoder)) if decoder != "none" else None
    keys = keys_of(image_key), keys_of(text_key)
    written, skipped, error = 0, collections.Counter(), ""
    writer = ArrayRecordWriter(target + ".tmp", "group_size:1")
    try:
        with open_file(src) as f:
            for sample, _ in tar.samples(f):
                reason = check(sample, *keys, decode)
                if reason:
                    skipped[reason] += 1
                    continue
                writer.write(records.encode(sample))
                written += 1
    except Exception as e:  # an unreadable shard is reported, not fatal
        skipped["unreadable_shard"] += 1
        error = f"{src}: {type(e).__name__}: {e}"
    finally:
        writer.close()
    os.replace(target + ".tmp", target)
    return {"written": written, "skipped": dict(skipped), "error": error}


def convert(
    src: str,
    out: str,
    image_key: str = "jpg;jpeg;png;webp",
    text_key: str = "txt",
    decoder: str = "auto",
    workers: int = 1,
    progress: bool = True,
) -> dict:
    """Converts every shard named by `src`; returns and writes the summary."""
    shards = list_files(src, ".tar")
    os.makedirs(out, exist_ok=True)
    total = {"shards": len(shards), "written": 0, "skipped": collections.Counter(), "errors": []}
    try:
        from tqdm import tqdm
    except ImportError:
        tqdm = None
    bar = tqdm(total=len(shards), unit="shard", disable=not progress) if tqdm else None
    pool = futures.ProcessPoolExecutor(workers) if workers > 1 else None
    run = pool.submit if pool else (lambda fn, *a: _done(fn(*a)))
    jobs = [run(convert_shard, s, out, image_key, text_key, decoder) for s in shards]
    for job in futures.as_completed(jobs) if pool else jobs:
        result = job.result()
        total["written"] += result["written"]
        total["skipped"].update(result["skipped"])
        if result["error"]:
            total["errors"].append(result["error"])
        if bar:
            bar.update(1)
            bar.set_postfix(written=total["written"], skipped=sum(total["skipped"].values()))
    if bar:
        bar.close()
    if pool:
        pool.shutdown()
    total["skipped"] = dict(total["skipped"])
    with open(os.path.join(out, "_summary.json"), "w") as f:
        json.dump(total, f, indent=2)
    return total


def _done(value) -> futures.Future:
    future = futures.Future()
    future.set_result(value)
    return future


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--src", required=True, help="shards: folder, glob, {a..b} range, gs://")
    parser.add_argument("--out", required=True, help="output folder")
    parser.add_argument("--image_key", default="jpg;jpeg;png;webp")
    parser.add_argument("--text_key", default="txt")
    parser.add_argument("--decoder", default="auto", help="auto | pil | simplejpeg | none")
    parser.add_argument("--workers", type=int, default=os.cpu_count() or 1)
    args = parser.parse_args()
    summary = convert(args.src, args.out, args.image_key, args.text_key, args.decoder, args.workers)
    skipped = summary["skipped"]
    print(
        f"Wrote {summary['written']} samples from {summary['shards']} shards to {args.out};"
        f" skipped {sum(skipped.values())}"
        + (
            " (" + ", ".join(f"{k}: {v}" for k, v in sorted(skipped.items())) + ")"
            if skipped
            else ""
        )
        + "."
    )
    for error in summary["errors"]:
        print(f"  unreadable: {error}")


if __name__ == "__main__":
    errors.run(main)
