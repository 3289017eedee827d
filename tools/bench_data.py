r"""Images per second per CPU core: decode + augment + tokenize + batch from tar shards.

  python tools/bench_data.py                       # table on stdout, bench_data.json
  python tools/bench_data.py --images=2000 --threads=1,2 --out=/tmp/b.json
  python tools/bench_data.py --threads=1,2 --pairs=3 --busy   # alternated, one core busy

`--threads` is the list of thread counts (mmjax threads), worker process counts (mmjax
`data.worker_processes` and open_clip's DataLoader workers). `--pairs` repeats every run
that many times, alternating the pipelines, and reports medians (and the median ratio of
mmjax's best to open_clip's over the runs of one round, which ran under the same load).
`--busy` keeps one core busy with a spinning process for the whole measurement.

Writes webdataset shards of 256x256 JPEGs (tools/make_synthetic_shards.py), then reads
them into batches of 224x224 CLIP training crops (random resized crop, scale 0.9-1.0,
bicubic) with CLIP BPE tokens, through

- mmjax: `pipeline.train_iterator` (config.data.source="wds"), uint8 batches,
  normalisation left to the device; with the fastest installed decoder/resizer ("auto")
  and with plain Pillow;
- open_clip's pipeline, when torch and webdataset are installed: webdataset
  (tarfile_to_samples, shuffle, decode("pilrgb"), rename, map_dict, to_tuple, batched)
  read by a torch `DataLoader`, with open_clip's train transform rebuilt from PIL and torch
  (RandomResizedCrop, RGB, ToTensor, Normalize: torchvision itself may not import here)
  and open_clip's own tokenizer (`wds.WebLoader` is this `DataLoader` behind a generator).

"Per core" is images per CPU-second: CPU time of the process and its workers, so a
pipeline that keeps two cores busy is not credited twice. Also the component costs
(decoders, resizers) behind `images.py`'s "auto" choice.
"""

import argparse
import json
import multiprocessing
import os
import platform
import resource
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from mmjax import config as config_lib
from mmjax import errors
from mmjax.data import images, pipeline
from tools.make_synthetic_shards import write_shards

MEAN = (0.48145466, 0.4578275, 0.40821073)  # open_clip's OPENAI_DATASET_MEAN / STD
STD = (0.26862954, 0.26130258, 0.27577711)


def _cpu(who: int) -> float:
    usage = resource.getrusage(who)
    return usage.ru_utime + usage.ru_stime


def reap_children(before: set, timeout_s: float = 60.0) -> None:
    """Waits for the worker processes started since `before` (mmjax's pool shuts down
    without waiting), so that their CPU time counts for the run that used them."""
    deadline = time.perf_counter() + timeout_s
    while set(multiprocessing.active_children()) - before:
        if time.perf_counter() > deadline:
            break
        time.sleep(0.05)


def measure(make_batches, batch: int, batches: int, warmup: int = 2) -> dict:
    """Wall and CPU time of `batches` batches after `warmup` (workers started, buffers full).

    CPU time: this process's (all threads) over the timed batches, plus worker processes'
    (known only once they are joined by `close`) in proportion to the batches timed.
    """
    before = set(multiprocessing.active_children())  # e.g. --busy's spinner
    kids0 = _cpu(resource.RUSAGE_CHILDREN)
    it, close = make_batches()
    for _ in range(warmup):
        next(it)
    own1, t1 = _cpu(resource.RUSAGE_SELF), time.perf_counter()
    for _ in range(batches):
        next(it)
    wall = time.perf_counter() - t1
    own = _cpu(resource.RUSAGE_SELF) - own1
    close()
    reap_children(before)
    kids = (_cpu(resource.RUSAGE_CHILDREN) - kids0) * batches / (batches + warmup)
    n = batch * batches
    return {
        "images": n,
        "wall_s": wall,
        "cpu_s": own + kids,
        "images_per_s": n / wall,
        "images_per_cpu_s": n / (own + kids),
    }


def mmjax_batches(
    shards: str, batch: int, threads: int, decoder: str, resizer: str, processes: int = 0
):
    def make():
        c = config_lib.base()
        c.batch_size = batch
        c.data.source, c.data.path = "wds", shards
        image = c.data.modalities.image
        image.size, image.decoder, image.resizer = 224, decoder, resizer
        c.data.num_threads, c.data.prefetch = threads, 2
        c.data.worker_processes = processes
        c.data.shuffle_buffer = 1000
        c.data.modalities.text.tokenizer = "clip_bpe"
        it = pipeline.train_iterator(c, 0, 1)
        return it, it.close

    return make


def open_clip_batches(shards: str, batch: int, workers: int):
    """open_clip's webdataset training pipeline (src/open_clip_train/data.py), torch
    DataLoader included; transforms equivalent to open_clip's, from PIL and torch."""
    import torch
    import webdataset as wds
    from PIL import Image

    from tools.make_clip_bpe_fixture import open_clip_tokenize

    tokenize = open_clip_tokenize()
    mean, std = torch.tensor(MEAN).view(3, 1, 1), torch.tensor(STD).view(3, 1, 1)

    def preprocess(image: Image.Image) -> "torch.Tensor":
        rng = np.random.default_rng()
        top, left, h, w = images.random_box(
            (image.height, image.width), (0.9, 1.0), (3 / 4, 4 / 3), rng
        )
        box = [
            round(v)
            for v in (
                left * image.width,
                top * image.height,
                (left + w) * image.width,
                (top + h) * image.height,
            )
        ]
        image = image.crop(box).resize((224, 224), Image.Resampling.BICUBIC)  # resized_crop
        image = image.convert("RGB")
        tensor = torch.from_numpy(np.asarray(image, np.uint8).copy()).permute(2, 0, 1)
        return (tensor.float().div(255) - mean) / std  # ToTensor, Normalize

    def has_caption_and_image(sample: dict) -> bool:
        return "txt" in sample and any(k in sample for k in ("png", "jpg", "jpeg", "webp"))

    urls = sorted(str(p) for p in Path(shards).glob("*.tar"))

    def make():
        torch.set_num_threads(1)
        data = wds.DataPipeline(
            wds.ResampledShards(urls),
            wds.tarfile_to_samples(handler=wds.warn_and_continue),
            wds.shuffle(1000, initial=1000),
            wds.select(has_caption_and_image),
            wds.decode("pilrgb", handler=wds.warn_and_continue),
            wds.rename(image="jpg;png;jpeg;webp", text="txt"),
            wds.map_dict(image=preprocess, text=lambda text: tokenize([text])[0]),
            wds.to_tuple("image", "text"),
            wds.batched(batch, partial=False),
        )
        # wds.WebLoader is this DataLoader behind a generator; the DataLoader's own
        # iterator can be shut down, which joins the workers (their CPU time counts).
        loader = torch.utils.data.DataLoader(
            data, batch_size=None, shuffle=False, num_workers=workers
        )
        it = iter(loader)

        def close():
            getattr(it, "_shutdown_workers", lambda: None)()

        return it, close

    return make


def components(data: bytes, repeats: int = 300) -> dict[str, float]:
    """Median microseconds per 256 px JPEG for each decoder, and each resizer (a 245 px
    crop to 224), calls interleaved so that a change of load hits all alike."""
    pixels = images.decode_pil(data)
    calls = {}
    for name in images.DECODERS.names():
        calls[f"decode/{name}"] = (images.DECODERS.get(name), (data,))
    for name in images.RESIZERS.names():
        calls[f"resize/{name}"] = (images.RESIZERS.get(name), (pixels, (5, 6, 245, 245), 224))
    times: dict[str, list[float]] = {}
    for key, (fn, args) in calls.items():
        try:
            fn(*args)
            times[key] = []
        except ImportError:
            continue
    for _ in range(repeats):
        for key in times:
            fn, args = calls[key]
            t = time.perf_counter()
            fn(*args)
            times[key].append(time.perf_counter() - t)
    return {k: float(np.median(v)) * 1e6 for k, v in times.items()}


def spin() -> None:
    while True:
        pass


def runs_for(shards: str, batch: int, n: int, auto: tuple[str, str]) -> list:
    runs = [
        (f"mmjax threads ({auto[0]} + {auto[1]})", mmjax_batches(shards, batch, n, *auto)),
        (
            f"mmjax processes ({auto[0]} + {auto[1]})",
            mmjax_batches(shards, batch, n, *auto, processes=n),
        ),
        ("mmjax threads (pil + pil)", mmjax_batches(shards, batch, n, "pil", "pil")),
    ]
    try:
        import torch  # noqa: F401
        import webdataset  # noqa: F401

        # workers=0 reads in the main process: one core, like one mmjax thread.
        runs.append(("open_clip (webdataset + DataLoader)", open_clip_batches(shards, batch, n)))
    except ImportError as e:
        print(f"open_clip reference skipped: {e}")
    return runs


def int_list(flag: str, text: str) -> list[int]:
    """ "1,2" -> [1, 2]; anything else fails naming the flag."""
    try:
        values = [int(x) for x in text.split(",") if x.strip()]
    except ValueError:
        values = []
    if not values or min(values) < 1:
        raise errors.UsageError(f"{flag}={text}: give positive integers, e.g. {flag}=1,2.")
    return values


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--images", type=int, default=1536, help="images timed per run")
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--threads", default="1,2", help="threads / workers, comma-separated")
    parser.add_argument("--pairs", type=int, default=1, help="alternated repeats (medians)")
    parser.add_argument("--busy", action="store_true", help="keep one core busy meanwhile")
    parser.add_argument("--shards", default="", help="existing shard folder (else written)")
    parser.add_argument("--out", default="bench_data.json")
    args = parser.parse_args()
    threads = int_list("--threads", args.threads)
    tmp = tempfile.TemporaryDirectory()
    shards = args.shards or tmp.name
    if not args.shards:
        write_shards(shards, shards=8, per_shard=256, image_size=256, seed=0)
    with open(Path(shards) / "00000.tar", "rb") as f:
        from mmjax.data import tar

        sample = next(tar.samples(f))[0]
    batches = max(args.images // args.batch, 1)
    results = {"components_us": components(sample["jpg"]), "runs": [], "busy": args.busy}
    auto = images.pick("decoder", "auto"), images.pick("resizer", "auto")
    busy = None
    if args.busy:
        busy = multiprocessing.get_context("spawn").Process(target=spin, daemon=True)
        busy.start()
    try:
        for n in threads:
            runs = runs_for(shards, args.batch, n, auto)
            for round_ in range(args.pairs):
                for name, make in runs:
                    r = measure(make, args.batch, batches)
                    results["runs"].append({"pipeline": name, "threads": n, "round": round_, **r})
                    print(
                        f"{name:40s} n={n} round {round_}: {r['images_per_s']:7.0f} img/s,"
                        f" {r['images_per_cpu_s']:6.0f} img/s per core",
                        flush=True,
                    )
    finally:
        if busy is not None:
            busy.terminate()
    results["machine"] = {
        "cpus": os.cpu_count(),
        "platform": platform.platform(),
        "load_avg": os.getloadavg(),
    }
    print_tables(results)
    Path(args.out).write_text(json.dumps(results, indent=2))
    print(f"\nWrote {args.out}.")


def print_tables(results: dict) -> None:
    """Medians over rounds; the ratio of mmjax's best run to open_clip's in each round."""
    groups: dict[tuple[str, int], list[dict]] = {}
    for r in results["runs"]:
        groups.setdefault((r["pipeline"], r["threads"]), []).append(r)
    print("\n| pipeline | threads / workers | images/s (median) | images/s per core | runs |")
    print("|---|---|---|---|---|")
    for (name, n), rs in groups.items():
        rate = float(np.median([r["images_per_s"] for r in rs]))
        core = float(np.median([r["images_per_cpu_s"] for r in rs]))
        print(f"| {name} | {n} | {rate:.0f} | {core:.0f} | {len(rs)} |")
    ratios = {}
    for r in results["runs"]:
        ratios.setdefault((r["threads"], r["round"]), {})[r["pipeline"]] = r["images_per_s"]
    per_n: dict[int, list[float]] = {}
    for (n, _), rates in ratios.items():
        ours = max(v for k, v in rates.items() if k.startswith("mmjax"))
        theirs = [v for k, v in rates.items() if k.startswith("open_clip")]
        if theirs:
            per_n.setdefault(n, []).append(ours / theirs[0])
    for n, rs in per_n.items():
        print(
            f"mmjax best / open_clip, n={n}: median {np.median(rs):.2f} over {len(rs)} rounds"
            f" ({', '.join(f'{x:.2f}' for x in rs)})"
        )
    results["ratio_best_mmjax_over_open_clip"] = {str(n): rs for n, rs in per_n.items()}
    print("\n| component (one 256 px JPEG) | microseconds |\n|---|---|")
    for k, v in results["components_us"].items():
        print(f"| {k} | {v:.0f} |")


if __name__ == "__main__":
    errors.run(main)
