r"""The objectives study (docs/objectives.md): trains its runs, then writes a table and plots.

  python tools/study_objectives.py --dir=workdirs/objectives [--steps=1000] [--out=docs/objectives]

Runs (configs/demo_objectives.py, each the demo model, data and steps with one loss swapped):
CLIP, SupCon and MaskCon over the coarse (shape) label, Matryoshka, FILIP, and CLIP trained
separately at the Matryoshka prefixes' sizes (8, 16, 32). Finished runs are skipped, so a
re-run continues. Writes OUT.json (every run's final metrics, its zero-shot curve and its
wall time) and OUT_*.png; prints the table.
"""

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from mmjax import storage
from mmjax.sweeps import collect

CONFIG = "configs/demo_objectives.py"
SMALL_DIMS = (8, 16, 32)
RUNS = {
    "clip": "objective=clip",
    "supcon": "objective=supcon",
    "maskcon": "objective=maskcon",
    "matryoshka": "objective=matryoshka",
    "filip": "objective=filip",
    **{f"clip_d{d}": f"objective=clip,dim={d}" for d in (16, 32, 8)},
}


def train(name: str, arg: str, workdir: str, steps: int) -> float:
    """Trains one run to its end (resuming an interrupted one); its wall seconds."""
    cmd = [sys.executable, "-m", "mmjax.main", f"--config={CONFIG}:{arg},steps={steps}"]
    start = time.perf_counter()
    with open(Path(workdir).with_suffix(".log"), "ab") as log:
        subprocess.run([*cmd, f"--workdir={workdir}"], stdout=log, stderr=log, check=True)
    return time.perf_counter() - start


def results(workdir: str) -> dict:
    """Final evaluation metrics and the zero-shot top-1 curve of a finished run."""
    final, curve = {}, []
    for line in storage.iter_lines(storage.join(workdir, "metrics.jsonl")):
        record = json.loads(line)
        evals = {k: v for k, v in record.items() if k.split("/")[0] in EVALS}
        final.update(evals)
        if "zeroshot/top1" in record:
            curve.append((record["step"], record["zeroshot/top1"]))
    return dict(final=final, curve=curve)


EVALS = ("zeroshot", "knn", "retrieval", "retrieval_tokens")
COLUMNS = {
    "zero-shot top-1": "zeroshot/top1",
    "mean per-class recall": "zeroshot/mean_per_class_recall",
    "kNN top-1": "knn/top1",
    "i2t R@1": "retrieval/i2t_recall@1",
    "t2i R@1": "retrieval/t2i_recall@1",
}


def table(study: dict) -> str:
    """The final metrics of every finished run, as a markdown table."""
    head = ["run", *COLUMNS, "wall s"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for name, r in study.items():
        cells = [f"{r['final'].get(k, float('nan')):.3f}" for k in COLUMNS.values()]
        lines.append(f"| {name} | " + " | ".join(cells) + f" | {r['wall_s']:.0f} |")
    return "\n".join(lines)


def plot_curves(study: dict, path: str) -> None:
    fig, ax = plt.subplots(figsize=(6, 4))
    for name in [n for n in ("clip", "supcon", "maskcon", "matryoshka", "filip") if n in study]:
        steps, top1 = zip(*study[name]["curve"], strict=True)
        ax.plot(steps, top1, marker="o", label=name)
    ax.set(xlabel="step", ylabel="zero-shot top-1 (25 fine classes)", ylim=(0, 1))
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)


def matryoshka_points(study: dict) -> list[tuple[int, float, float, float]]:
    """(dims, top-1 of the Matryoshka model's prefix, of CLIP's prefix, of a CLIP trained
    at that size; nan where that run has not finished)."""
    nan = float("nan")
    top1 = lambda run, d: (
        study.get(run, {})
        .get("final", {})
        .get("zeroshot/top1" if d == 64 else f"zeroshot/top1@dim{d}", nan)
    )
    alone = lambda d: study.get("clip" if d == 64 else f"clip_d{d}", {}).get("final", {})
    return [
        (d, top1("matryoshka", d), top1("clip", d), alone(d).get("zeroshot/top1", nan))
        for d in (*SMALL_DIMS, 64)
    ]


def plot_matryoshka(study: dict, path: str) -> None:
    dims, nested, truncated, alone = zip(*matryoshka_points(study), strict=True)
    fig, ax = plt.subplots(figsize=(6, 4))
    ax.plot(dims, nested, marker="o", label="Matryoshka 64, prefix")
    ax.plot(dims, truncated, marker="x", ls="--", label="CLIP 64, prefix")
    ax.plot(dims, alone, marker="s", ls="", label="CLIP trained at that size")
    ax.set(xscale="log", xlabel="embedding dimensions", ylabel="zero-shot top-1", ylim=(0, 1))
    ax.set_xticks(dims, [str(d) for d in dims])
    ax.minorticks_off()
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--dir", required=True, help="one workdir per run below it")
    parser.add_argument("--steps", type=int, default=1000)
    parser.add_argument("--out", default="docs/objectives", help="OUT.json, OUT_*.png")
    parser.add_argument("--collect", action="store_true", help="train nothing; report")
    args = parser.parse_args()

    Path(args.dir).mkdir(parents=True, exist_ok=True)
    times_path = Path(args.dir) / "wall_s.json"
    times = json.loads(times_path.read_text()) if times_path.exists() else {}
    for i, (name, arg) in enumerate(RUNS.items(), 1):
        if args.collect:
            break
        workdir = str(Path(args.dir) / name)
        if collect.is_finished(workdir, args.steps):
            print(f"[{i}/{len(RUNS)}] {name}: finished", flush=True)
            continue
        print(f"[{i}/{len(RUNS)}] {name}: training {args.steps} steps", flush=True)
        times[name] = times.get(name, 0.0) + train(name, arg, workdir, args.steps)
        times_path.write_text(json.dumps(times))
    study = {
        name: {**results(str(Path(args.dir) / name)), "wall_s": times.get(name, float("nan"))}
        for name in RUNS
        if collect.is_finished(str(Path(args.dir) / name), args.steps)
    }
    print(f"{len(study)}/{len(RUNS)} runs finished: {', '.join(study)}")
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(f"{args.out}.json").write_text(json.dumps(study, indent=1))
    plot_curves(study, f"{args.out}_curves.png")
    plot_matryoshka(study, f"{args.out}_matryoshka.png")
    print(table(study))
    print("\n| dims | Matryoshka prefix | CLIP prefix | CLIP trained at that size |")
    print("|---|---|---|---|")
    for d, nested, truncated, alone in matryoshka_points(study):
        print(f"| {d} | {nested:.3f} | {truncated:.3f} | {alone:.3f} |")
    if "filip" in study and "clip" in study:
        clip, filip = study["clip"]["final"], study["filip"]["final"]
        for k in ("i2t_recall@1", "t2i_recall@1"):
            print(
                f"{k}: CLIP {clip[f'retrieval/{k}']:.3f}, FILIP by embedding"
                f" {filip[f'retrieval/{k}']:.3f}, by tokens {filip[f'retrieval_tokens/{k}']:.3f}"
            )


if __name__ == "__main__":
    main()
