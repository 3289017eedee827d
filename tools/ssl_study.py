r"""The self-supervised aids study: the demo CLIP with each aid against plain CLIP.

  python tools/ssl_study.py --dir=workdirs/ssl_study                 # train, then report
  python tools/ssl_study.py --dir=workdirs/ssl_study --collect       # only the report
  python tools/ssl_study.py --dir=... --aids=none,views --steps=300

Each aid (configs/demo_ssl.py) trains in DIR/<aid> for the same number of steps, one run
after another (a finished run is skipped, an interrupted one resumes). The report: DIR/
results.csv, a Markdown table on stdout, and --plot (a PNG) with zero-shot, kNN and
linear-probe top-1 per aid and each aid's step time relative to plain CLIP (steps/s over
the logged windows after the first, which holds the compilation; or, after --bench, the
interleaved timing below).

  python tools/ssl_study.py --dir=workdirs/ssl_study --bench     # step times, interleaved

--bench compiles every aid's train step in one process and times them on a fixed random
batch in alternating rounds (so that a change of the machine's load hits all alike),
writing DIR/step_times.json (median seconds per step); the host's augmentation (views)
is not in it.
"""

import argparse
import csv
import io
import json
import statistics
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_step import MmjaxStep
from sweep import train

from mmjax import storage
from mmjax.sweeps import collect, config_io

CONFIG = "configs/demo_ssl.py"
DEFAULT_AIDS = "none,views,flip,mae,mlm,mlm_cross,queue,patchmix"
METRICS = {  # metrics.jsonl key -> column
    "zeroshot/top1": "zeroshot_top1",
    "knn/top1": "knn_top1",
    "linear_probe/top1": "probe_top1",
    "retrieval/i2t_recall@1": "i2t_recall@1",
    "retrieval/t2i_recall@1": "t2i_recall@1",
}
COLUMNS = ["aid", "steps", *METRICS.values(), "steps_per_s", "step_time_ratio", "wall_s"]


def config_arg(aid: str, steps: int, seed: int = 0) -> str:
    return f"{CONFIG}:aid={aid},steps={steps},seed={seed}"


def run_name(aid: str, seed: int) -> str:
    """DIR/<aid> for seed 0, DIR/<aid>+seed=<n> for another seed."""
    return aid if seed == 0 else f"{aid}+seed={seed}"


def steps_per_s(workdir: str) -> float:
    """Mean steps/s of the logged windows after the first (which holds the compilation)."""
    rates = []
    for line in storage.iter_lines(storage.join(workdir, "metrics.jsonl")):
        record = json.loads(line)
        if "steps_per_s" in record:
            rates.append(record["steps_per_s"])
    rates = rates[1:] or rates
    return sum(rates) / len(rates) if rates else float("nan")


def bench(aids: list[str], steps: int, rounds: int, per_round: int) -> dict[str, float]:
    """{aid: median seconds per train step}, aids timed in alternating rounds."""
    runs = {}
    for aid in aids:
        config = config_io.load_config(config_arg(aid, steps), {"compile_cache_dir": ""})
        runs[aid] = MmjaxStep(config, fixed_batch=True)
        runs[aid].run(2)  # warm up
    times = {aid: [] for aid in aids}
    for _ in range(rounds):
        for aid, run in runs.items():
            times[aid] += run.run(per_round)[0]
    return {aid: statistics.median(t) for aid, t in times.items()}


def row(aid: str, workdir: str, steps: int) -> dict:
    _, metrics = collect.final_metrics(workdir)
    wall = collect.wall_seconds(workdir)
    out = {"aid": aid, "steps": steps, **{c: metrics.get(k, "") for k, c in METRICS.items()}}
    return out | {"steps_per_s": steps_per_s(workdir), "wall_s": "" if wall is None else wall}


def table(rows: list[dict]) -> str:
    """Markdown: one line per aid, metrics in percent, step time relative to plain CLIP."""
    head = "| aid | zero-shot top-1 | kNN top-1 | probe top-1 | I->T R@1 | T->I R@1 | step time |"
    lines = [head, "|" + "---|" * 7]
    pct = lambda v: "" if v == "" else f"{100 * float(v):.1f}"
    for r in rows:
        ratio = f"{r['step_time_ratio']:.2f}x" if r["step_time_ratio"] else ""
        cells = [pct(r[c]) for c in list(METRICS.values())]
        lines.append(f"| {r['aid']} | " + " | ".join(cells) + f" | {ratio} |")
    return "\n".join(lines)


def plot(rows: list[dict], path: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    spread = [r for r in rows if r["aid"].split("+")[0] == "none" and r["zeroshot_top1"] != ""]
    rows = [r for r in rows if "+" not in r["aid"]]  # the bars: seed 0
    aids = [r["aid"] for r in rows]
    fig, (ax, bx) = plt.subplots(1, 2, figsize=(11, 4), gridspec_kw={"width_ratios": [3, 1.4]})
    width = 0.27
    if len(spread) > 1:  # plain CLIP's zero-shot over its seeds
        zs = [100 * float(r["zeroshot_top1"]) for r in spread]
        label = f"plain CLIP zero-shot, {len(zs)} seeds"
        ax.axhspan(min(zs), max(zs), color="C0", alpha=0.12, label=label)
    for i, (col, label) in enumerate(
        [("zeroshot_top1", "zero-shot"), ("knn_top1", "kNN"), ("probe_top1", "linear probe")]
    ):
        values = [100 * float(r[col]) if r[col] != "" else np.nan for r in rows]
        ax.bar(np.arange(len(aids)) + (i - 1) * width, values, width, label=label)
    ax.set_xticks(range(len(aids)), aids)
    ax.set_ylabel("top-1 (%) on the held-out split")
    ax.set_title(f"demo CLIP + one aid, {rows[0]['steps']} steps")
    ax.set_ylim(0, 80)
    ax.legend(loc="upper center", ncol=2, fontsize=8)
    ax.grid(axis="y", alpha=0.3)
    bx.bar(aids, [r["step_time_ratio"] or np.nan for r in rows], color="gray")
    bx.axhline(1.0, color="k", lw=0.8)
    bx.set_ylabel("step time / plain CLIP's")
    bx.tick_params(axis="x", rotation=45)
    fig.tight_layout()
    fig.savefig(path, dpi=120)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--dir", required=True)
    parser.add_argument("--aids", default=DEFAULT_AIDS)
    parser.add_argument("--steps", type=int, default=300)
    parser.add_argument("--seeds", default="0", help="comma-separated; seed 0 in DIR/<aid>")
    parser.add_argument("--collect", action="store_true", help="only report")
    parser.add_argument("--plot", default="", help="write the plot to this PNG")
    parser.add_argument("--python", default=sys.executable)
    parser.add_argument("--bench", action="store_true", help="only time the steps")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--per_round", type=int, default=4)
    args = parser.parse_args()
    aids = args.aids.split(",")
    timings = storage.join(args.dir, "step_times.json")
    if args.bench:
        seconds = bench(aids, args.steps, args.rounds, args.per_round)
        storage.write_text(timings, json.dumps(seconds, indent=1))
        print(json.dumps(seconds, indent=1))
        return
    runs = [(aid, int(seed)) for seed in args.seeds.split(",") for aid in aids]
    for aid, seed in runs if not args.collect else ():
        workdir = storage.join(args.dir, run_name(aid, seed))
        if collect.is_finished(workdir, args.steps):
            continue
        print(f"{run_name(aid, seed)}: {args.steps} steps", flush=True)
        flag = f"--config={config_arg(aid, args.steps, seed)}"
        train([args.python, "-m", "mmjax.main", flag, f"--workdir={workdir}"], workdir)
    rows = [
        row(run_name(aid, seed), storage.join(args.dir, run_name(aid, seed)), args.steps)
        for aid, seed in runs
        if collect.is_finished(storage.join(args.dir, run_name(aid, seed)), args.steps)
    ]
    if storage.exists(timings):  # the interleaved timing, if there is one
        seconds = json.loads(storage.read_text(timings))
        for r in rows:
            aid = r["aid"].split("+")[0]
            r["steps_per_s"] = 1.0 / seconds[aid] if aid in seconds else ""
    base = next((r["steps_per_s"] for r in rows if r["aid"] == "none"), None)
    for r in rows:
        r["step_time_ratio"] = base / r["steps_per_s"] if base and r["steps_per_s"] else ""
    out = io.StringIO(newline="")
    writer = csv.DictWriter(out, fieldnames=COLUMNS)
    writer.writeheader()
    writer.writerows(rows)
    storage.write_text(storage.join(args.dir, "results.csv"), out.getvalue())
    print(table(rows))
    if args.plot and rows:
        plot(rows, args.plot)


if __name__ == "__main__":
    main()
