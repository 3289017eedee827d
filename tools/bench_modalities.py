r"""Input throughput of five-modality training batches: image, text, audio, IMU, video.

  python tools/bench_modalities.py                  # batch 128, 1 and 2 threads
  python tools/bench_modalities.py --batches=10 --threads=2 --audio_rate=16000

Times `pipeline.train_iterator` (what the train loop reads) for batches of `--batch`
examples of image uint8 [S, S, 3], text int32 [L], audio float32 [rate x seconds], IMU
float32 [128, 6], video uint8 [8, S, S, 3] and the class, from

- the multimodal synthetic source read in batches (`source.batch`, the "batched" path);
- the same source read one example at a time (`source[i]`, the "random_access" path);
- webdataset shards of the same examples (JPEG, 8 kHz FLAC, .npy;
  tools/make_synthetic_shards.py), decoded and cropped: audio windows of half the clip
  (resampled when `--audio_rate` is not 8000), IMU windows of half its rows.

Examples per second of wall time, and per CPU-second of the process (so that a busy
machine, or a second thread, is not credited twice), after `--warmup` batches.
"""

import argparse
import os
import sys
import tempfile
from pathlib import Path

import ml_collections

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from mmjax import config as config_lib
from mmjax import errors
from mmjax.data import modalities, pipeline, sources
from mmjax.data.examples import Prepare
from mmjax.data.stages import TrainIterator
from tools.bench_data import measure
from tools.make_synthetic_shards import write_shards


def data_config(args, source: str, path: str, threads: int) -> ml_collections.ConfigDict:
    c = config_lib.base()
    c.batch_size = args.batch
    c.data.source, c.data.path = source, path
    c.data.num_threads, c.data.prefetch = threads, 2
    c.data.shuffle_buffer = 256
    crop = 0.5 if source == "wds" else 1.0  # shards: windows of half of what is stored
    c.data.modalities = ml_collections.ConfigDict(
        dict(
            image=config_lib.modality("image", size=args.size),
            text=config_lib.modality("text"),
            audio=config_lib.modality(
                "audio", sample_rate=args.audio_rate, clip_seconds=args.audio_seconds * crop
            ),
            imu=config_lib.modality("timeseries", length=round(128 * crop)),
            video=config_lib.modality("video", frames=8, stride=1, size=args.size),
            label=config_lib.modality("label"),
        )
    )
    return c


def batches(config: ml_collections.ConfigDict, kind: str = ""):
    """`measure`'s factory: the train iterator, optionally forced to one READERS kind."""

    def make():
        if kind:
            source = sources.build_source(config.data, "train", config.seed)
            prepare = Prepare(modalities.build_readers(config, train=True))
            open_batches = pipeline.READERS.get(kind)(source, prepare, config, 0, 1)
            it = TrainIterator(open_batches, config.batch_size, ())
        else:
            it = pipeline.train_iterator(config, 0, 1)
        return it, it.close

    return make


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--batch", type=int, default=128)
    parser.add_argument("--batches", type=int, default=8, help="batches timed per run")
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--threads", default="1,2")
    parser.add_argument("--size", type=int, default=32, help="image and video frame side")
    parser.add_argument("--audio_rate", type=int, default=8000)
    parser.add_argument("--audio_seconds", type=float, default=1.0)
    args = parser.parse_args()
    tmp = tempfile.TemporaryDirectory()
    written = ("image", "text", "audio", "imu", "video")
    write_shards(tmp.name, 4, 2 * args.batch, args.size, 0, written, "flac")  # audio 8 kHz
    shape = (
        f"image {args.size}px, audio {args.audio_rate} Hz x {args.audio_seconds:g} s,"
        f" IMU 128 x 6, video 8 x {args.size}px"
    )
    print(f"batch {args.batch}: {shape}; {os.cpu_count()} CPUs, load {os.getloadavg()[0]:.1f}")
    print("| input | threads | examples/s | examples per CPU-s |\n|---|---|---|---|")
    for threads in [int(t) for t in args.threads.split(",")]:
        runs = {
            "synthetic, batched reads": batches(data_config(args, "synthetic", "", threads)),
            "synthetic, one by one": batches(
                data_config(args, "synthetic", "", threads), "random_access"
            ),
            "wds shards (JPEG, FLAC, npy)": batches(data_config(args, "wds", tmp.name, threads)),
        }
        for name, make in runs.items():
            r = measure(make, args.batch, args.batches, args.warmup)
            print(
                f"| {name} | {threads} | {r['images_per_s']:.0f} | {r['images_per_cpu_s']:.0f} |",
                flush=True,
            )


if __name__ == "__main__":
    errors.run(main)
