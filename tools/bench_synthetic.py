r"""Times the multimodal synthetic source, per modality, on one core.

  taskset -c 0 python tools/bench_synthetic.py --batch=128

Reports CPU time per batch (`time.thread_time`, so a busy machine does not inflate it; the
best of `--repeats` batches, after a warm-up) and examples per CPU-second, for batches
(`source.batch`) and one example at a time (`source[i]`, as a Grain map does).
"""

import argparse
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from mmjax import errors
from mmjax.data.synthetic_multimodal import ALL_MODALITIES, MultimodalSyntheticSource


def best_seconds(fn, repeats: int) -> float:
    fn(0)  # warm-up: noise banks, wavetables, caches
    times = []
    for r in range(1, repeats + 1):
        start = time.thread_time()
        fn(r)
        times.append(time.thread_time() - start)
    return min(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--batch", type=int, default=128)
    parser.add_argument("--repeats", type=int, default=20)
    parser.add_argument("--singles", type=int, default=200, help="examples timed one by one")
    args = parser.parse_args()
    b = args.batch
    print(f"{'modalities':34s} {'ms / batch':>10s} {'ex/s batched':>13s} {'ex/s one by one':>16s}")
    for modalities in [(m,) for m in ALL_MODALITIES] + [ALL_MODALITIES]:
        source = MultimodalSyntheticSource(modalities=modalities)
        batch = best_seconds(
            lambda r, s=source: s.batch(np.arange(r * b, (r + 1) * b)), args.repeats
        )
        n = args.singles

        def one_by_one(r, s=source, n=n):
            for i in range(r * n, (r + 1) * n):
                s[i]

        single = best_seconds(one_by_one, 3) / n
        name = ",".join(modalities)
        print(f"{name:34s} {batch * 1e3:10.2f} {b / batch:13.0f} {1 / single:16.0f}")


if __name__ == "__main__":
    errors.run(main)
