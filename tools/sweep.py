r"""Runs a sweep (configs/sweeps/*.py) one run after another, or prints its launch commands.

  python tools/sweep.py --sweep=configs/sweeps/siglip_batch.py --dir=workdirs/siglip_batch
  python tools/sweep.py --sweep=... --dir=... --print     # one command per run, for a cluster
  python tools/sweep.py --sweep=... --dir=... --collect   # only (re)write results.csv

DIR may be local or a bucket (gs://...): every file goes through mmjax.storage.
Each run trains in DIR/<name>, its name made of its grid values
("batch_size=32+loss=sigmoid+samples_seen=32768"). Finished runs are skipped, so a
re-run continues an interrupted sweep (an unfinished run resumes from its checkpoint).
The final metrics of the finished runs go to DIR/results.csv (columns: mmjax/sweeps/collect.py).
"""

import argparse
import json
import shlex
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from mmjax import cli, errors, storage
from mmjax.sweeps import collect, config_io, grid


def load_spec(path: str) -> dict[str, Any]:
    """`get_sweep()` of a sweep file (a missing or failing file: one line naming it)."""
    return cli.load_module(path, "get_sweep", "sweep file")()


def command(spec: dict[str, Any], run: grid.Run, workdir: str, python: str) -> list[str]:
    """The `mmjax.main` command line that trains one run."""
    return [
        python,
        "-m",
        "mmjax.main",
        f"--config={spec['config']}",
        *config_io.override_flags(run.overrides),
        f"--workdir={workdir}",
    ]


def plan(spec: dict[str, Any]) -> list[tuple[grid.Run, Any]]:
    """Every run with its full config (the config each run will train with)."""
    base = config_io.load_config(spec["config"], {})
    runs = grid.expand(spec, base.batch_size)
    return [(r, config_io.load_config(spec["config"], r.overrides)) for r in runs]


def train(cmd: list[str], workdir: str) -> None:
    """Runs one training to the end, recording its wall time and output beside its metrics."""
    before = collect.wall_seconds(workdir) or 0.0
    start = time.perf_counter()
    log = storage.AppendFile(storage.join(workdir, "sweep.log"))
    try:
        proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
        for line in proc.stdout:
            log.write(line)
            log.flush()
        if proc.wait():
            raise subprocess.CalledProcessError(proc.returncode, cmd)
    finally:
        log.close()
    wall = before + time.perf_counter() - start  # a resumed run adds to its earlier time
    storage.write_text(storage.join(workdir, collect.WALL_FILE), json.dumps({"wall_s": wall}))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--sweep", required=True, help="a configs/sweeps/*.py file")
    parser.add_argument("--dir", required=True, help="the sweep directory (one workdir per run)")
    parser.add_argument("--print", action="store_true", help="print launch commands, run nothing")
    parser.add_argument("--collect", action="store_true", help="only write results.csv")
    parser.add_argument("--python", default=sys.executable, help="interpreter for the runs")
    args = parser.parse_args()

    spec = load_spec(args.sweep)
    root = args.dir
    runs = plan(spec)
    if args.print:
        for run, _ in runs:
            print(shlex.join(command(spec, run, storage.join(root, run.name), args.python)))
        return
    failed = 0
    if not args.collect:
        for i, (run, config) in enumerate(runs, 1):
            workdir = storage.join(root, run.name)
            if collect.is_finished(workdir, config.total_steps):
                print(f"[{i}/{len(runs)}] {run.name}: finished, skipped", flush=True)
                continue
            print(f"[{i}/{len(runs)}] {run.name}: {config.total_steps} steps", flush=True)
            try:
                train(command(spec, run, workdir, args.python), workdir)
            except subprocess.CalledProcessError as error:  # one bad run must not stop the rest
                failed += 1
                log = storage.join(workdir, "sweep.log")
                print(f"  failed (exit {error.returncode}): {log}", flush=True)
    rows = [
        collect.row(run.name, storage.join(root, run.name), config)
        for run, config in runs
        if collect.is_finished(storage.join(root, run.name), config.total_steps)
    ]
    results = storage.join(root, "results.csv")
    collect.write_csv(results, rows)
    print(f"{len(rows)}/{len(runs)} runs finished: {results}", flush=True)
    if failed:
        sys.exit(1)


if __name__ == "__main__":
    errors.run(main)
