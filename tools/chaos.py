r"""Kill a training run at random moments, resume it each time, and compare the result
with a run that was never interrupted.

  python tools/chaos.py --kills=10 --steps=60

Trains configs/demo.py (small and fast) in two workdirs: one straight through, one
killed `--kills` times with SIGKILL or SIGTERM at random moments (including during
asynchronous checkpoint saves) and restarted after each kill. Prints a table of kills,
resumes and steps lost, and the maximum absolute difference between the two runs'
final parameters, which must be exactly 0 on CPU. Writes the table as JSON too.
"""

import argparse
import json
import os
import pathlib
import random
import signal
import subprocess
import sys
import time

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))

from mmjax import checkpoint_files, errors, storage

REPO = pathlib.Path(__file__).resolve().parents[1]


def command(args: argparse.Namespace, workdir: str) -> list[str]:
    return [
        sys.executable,
        "-m",
        "mmjax.main",
        f"--config={REPO}/configs/demo.py:steps={args.steps},batch={args.batch}",
        "--config.schedule.warmup_steps=5",
        "--config.log_every=1",
        f"--config.ckpt_every={args.ckpt_every}",
        "--config.evals.zeroshot.every=0",
        f"--workdir={workdir}",
    ]


def env(devices: int) -> dict[str, str]:
    return dict(
        os.environ,
        PYTHONPATH=str(REPO),
        JAX_PLATFORMS="cpu",
        XLA_FLAGS=f"--xla_force_host_platform_device_count={devices}",
    )


def logged_steps(workdir: str) -> list[int]:
    """Steps written to metrics.jsonl so far, by every start of the run, in order."""
    return [
        json.loads(x)["step"] for x in storage.iter_lines(storage.join(workdir, "metrics.jsonl"))
    ]


def checkpoint_steps(workdir: str) -> list[int]:
    return checkpoint_files.finished_steps(storage.join(workdir, "checkpoints"))


def run_to_end(args, workdir: str) -> None:
    subprocess.run(command(args, workdir), env=env(args.devices), check=True, capture_output=True)


def chaos_run(args, workdir: str, rng: random.Random) -> list[dict]:
    """Kills and restarts until `args.kills` kills are done, then runs to the end."""
    rows = []
    while len(rows) < args.kills:
        before = checkpoint_steps(workdir)
        resumed_from = before[-1] if before else 0
        proc = subprocess.Popen(
            command(args, workdir),
            env=env(args.devices),
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        # Wait until this start has trained a step, then kill after a random delay of up
        # to a few steps and saves (saves are asynchronous: kills land inside them too).
        seen = len(logged_steps(workdir))
        while len(logged_steps(workdir)) == seen and proc.poll() is None:
            time.sleep(0.05)
        time.sleep(rng.uniform(0.0, args.max_delay))
        if proc.poll() is not None:
            raise errors.UsageError("The run finished before all kills: raise --steps.")
        sig = rng.choice([signal.SIGKILL, signal.SIGTERM])
        at = logged_steps(workdir)[-1]
        proc.send_signal(sig)
        proc.wait()
        after = checkpoint_steps(workdir)
        newest = after[-1] if after else 0
        rows.append(
            dict(
                kill=len(rows) + 1,
                signal=signal.Signals(sig).name,
                exit_code=proc.returncode,
                resumed_from=resumed_from,
                killed_near_step=at,
                next_start_step=newest,
                steps_lost=max(0, at - newest),
            )
        )
        print(" | ".join(f"{k} {v}" for k, v in rows[-1].items()), flush=True)
    run_to_end(args, workdir)
    return rows


def final_params(workdir: str, steps: int, args):
    """The parameters saved at `steps`, as numpy, restored on one CPU device."""
    import jax

    from mmjax import config as config_lib
    from mmjax import state as state_lib
    from mmjax.checkpoint import Checkpointer

    config = config_lib.load_config(f"{REPO}/configs/demo.py:steps={args.steps},batch={args.batch}")
    mesh = jax.make_mesh((1, 1, 1), ("data", "fsdp", "tensor"), devices=jax.devices()[:1])
    abstract = state_lib.build(config, mesh).abstract
    ckpt = Checkpointer(storage.join(workdir, "checkpoints"), read_only=True)
    state, _ = ckpt.restore(steps, abstract, None)
    ckpt.close()
    return jax.device_get(state.params)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--kills", type=int, default=10)
    parser.add_argument("--steps", type=int, default=300)
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--ckpt_every", type=int, default=5)
    parser.add_argument("--devices", type=int, default=1)
    parser.add_argument(
        "--max_delay", type=float, default=1.5, help="seconds after training starts"
    )
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--workdir", default="workdirs/chaos")
    parser.add_argument("--out", default="", help="JSON output (default WORKDIR/chaos.json)")
    args = parser.parse_args()
    base = args.workdir  # local or gs://
    if storage.exists(base):
        raise errors.UsageError(f"{base} exists: remove it or pass another --workdir.")
    rng = random.Random(args.seed)

    start = time.time()
    straight, chaos = storage.join(base, "straight"), storage.join(base, "chaos")
    print(f"Uninterrupted run: {straight}", flush=True)
    run_to_end(args, straight)
    print(f"Chaos run: {chaos}", flush=True)
    rows = chaos_run(args, chaos, rng)

    import jax
    import numpy as np

    a = final_params(straight, args.steps, args)
    b = final_params(chaos, args.steps, args)
    diff = max(float(np.max(np.abs(x - y))) for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)))
    summary = dict(
        kills=len(rows),
        sigkill=sum(r["signal"] == "SIGKILL" for r in rows),
        sigterm=sum(r["signal"] == "SIGTERM" for r in rows),
        resumes=len(rows),
        steps_lost=sum(r["steps_lost"] for r in rows),
        max_param_diff=diff,
        seconds=round(time.time() - start, 1),
    )
    print("\n| kill | signal | exit | resumed from | killed near step | next start | steps lost |")
    print("|---:|---|---:|---:|---:|---:|---:|")
    for r in rows:
        print(
            f"| {r['kill']} | {r['signal']} | {r['exit_code']} | {r['resumed_from']} |"
            f" {r['killed_near_step']} | {r['next_start_step']} | {r['steps_lost']} |"
        )
    print("\n" + " | ".join(f"{k}: {v}" for k, v in summary.items()))
    storage.write_text(
        args.out or storage.join(base, "chaos.json"),
        json.dumps(dict(rows=rows, summary=summary), indent=2),
    )
    if diff != 0.0:
        raise SystemExit(f"FAILED: final parameters differ by up to {diff}.")


if __name__ == "__main__":
    errors.run(main)
