r"""Times the train step with FLIP patch dropout against none, side by side in one run.

  python tools/bench_patch_dropout.py --variant=S/16 --res=224 --batch=16 --rounds=7

One compiled train step per drop ratio (the same model, optimizer and batch), then
`--rounds` rounds that time one step of each ratio in turn, so that a busy machine slows
them all alike; prints the median seconds per step and its ratio to 0% dropout. The
image tower is a ViT of `--variant` at `--res` px; the text tower is small
(`--text_width`, `--text_depth`), so the step time is mostly the image tower's.
"""

import argparse
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import flax.linen as nn
import jax
import numpy as np

from mmjax import config as mmconfig
from mmjax import errors, losses, state
from mmjax.parallel import mesh as mesh_lib
from mmjax.parallel import sharding
from mmjax.train import loop


def bench_config(args, ratio: float):
    c = mmconfig.base()
    c.batch_size = args.batch
    c.accum_steps = args.accum
    c.check_memory = False
    c.model.embed_dim = 256
    c.model.towers.image = mmconfig.tower("vit", variant=args.variant, token_drop=ratio)
    c.model.towers.text = mmconfig.tower(
        "text",
        width=args.text_width,
        depth=args.text_depth,
        num_heads=max(1, args.text_width // 64),
        mlp_dim=4 * args.text_width,
        vocab_size=1024,
        context_length=32,
    )
    c.data.modalities.image.size = args.res
    return mmconfig.lock(c)


def compiled_step(config):
    mesh = mesh_lib.make_mesh(config.mesh)
    with jax.set_mesh(mesh), nn.logical_axis_rules(sharding.as_rules(config.mesh.rules)):
        built = state.build(config, mesh)
        objective = losses.Objective(config.objectives, mesh)
        step = loop.compile_step(config, mesh, built, objective)
        train_state = state.init_state(built.init_fn, jax.random.key(0), built.shardings)
    rng = np.random.default_rng(0)
    size = config.data.modalities.image.size
    batch = {
        "image": rng.integers(0, 256, (config.batch_size, size, size, 3), dtype=np.uint8),
        "text": rng.integers(1, 1000, (config.batch_size, 32)).astype(np.int32),
    }
    return step, train_state, sharding.global_batch(batch, mesh)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--variant", default="S/16")
    parser.add_argument("--res", type=int, default=224)
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--accum", type=int, default=1)
    parser.add_argument("--text_width", type=int, default=128)
    parser.add_argument("--text_depth", type=int, default=2)
    parser.add_argument("--ratios", default="0,0.5,0.75")
    parser.add_argument("--rounds", type=int, default=7)
    args = parser.parse_args()
    try:
        ratios = [float(r) for r in args.ratios.split(",")]
    except ValueError:
        raise errors.UsageError(f"--ratios={args.ratios}: give numbers, e.g. 0,0.5.") from None
    runs = {}
    for r in ratios:
        start = time.perf_counter()
        step, train_state, batch = compiled_step(bench_config(args, r))
        train_state, metrics = step(train_state, batch)  # warm-up
        jax.block_until_ready(metrics)
        runs[r] = [step, train_state, batch, []]
        print(f"ratio {r:.2f}: compiled and warmed up in {time.perf_counter() - start:.1f} s")
    for _ in range(args.rounds):
        for r in ratios:
            step, train_state, batch, times = runs[r]
            start = time.perf_counter()
            train_state, metrics = step(train_state, batch)
            jax.block_until_ready(metrics)
            times.append(time.perf_counter() - start)
            runs[r][1] = train_state
    base = statistics.median(runs[ratios[0]][3])
    patches = (args.res // int(args.variant.partition("/")[2])) ** 2
    print(
        f"\nViT-{args.variant} at {args.res} px ({patches} patches), batch {args.batch},"
        f" accum {args.accum}, {jax.device_count()} {jax.devices()[0].platform} device(s),"
        f" {args.rounds} rounds"
    )
    print(f"{'drop':>6s} {'kept':>6s} {'median s/step':>14s} {'min':>8s} {'ratio':>7s}")
    for r in ratios:
        times = runs[r][3]
        kept = 1 + max(1, round((1 - r) * patches))
        med = statistics.median(times)
        print(f"{r:6.2f} {kept:6d} {med:14.3f} {min(times):8.3f} {med / base:7.2f}")


if __name__ == "__main__":
    errors.run(main)
