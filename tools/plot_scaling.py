r"""Fits error = beta x C^alpha per group of a sweep's results.csv; writes plots and a table.

  python tools/plot_scaling.py --csv=workdirs/siglip_batch/results.csv --x=global_batch \
      --group=loss --out=docs/scaling_siglip_batch

writes OUT.png (log-log, one line per group, the fit dashed) and OUT.md (the fitted
coefficients with bootstrap 95% intervals). The error is 1 - `--metric` (zero-shot top-1
by default); x is any numeric column: compute_flops, samples_seen, global_batch.
"""

import argparse
import csv
import io
import sys
from collections import defaultdict
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from mmjax import errors, scaling, storage

Groups = dict[str, tuple[np.ndarray, np.ndarray]]


def read_groups(path: str, x: str, metric: str, group: list[str]) -> Groups:
    """{group label: (x, error)} from the CSV (local or gs://); rows without the metric
    are left out."""
    points = defaultdict(list)
    rows = csv.DictReader(io.StringIO(storage.read_text(path), newline=""))
    columns = rows.fieldnames or []
    for flag, name in [("--x", x), ("--metric", metric), *(("--group", g) for g in group)]:
        if name not in columns:
            raise errors.UsageError(
                f"{flag}: {errors.unknown_name(f'column of {path}', name, columns)}"
            )
    for r in rows:
        if r.get(metric, "") == "":
            continue
        label = ", ".join(f"{g}={r[g]}" for g in group) or "all"
        try:
            points[label].append((float(r[x]), 1.0 - float(r[metric])))
        except ValueError:
            raise errors.UsageError(
                f"--x={x} / --metric={metric}: {r[x]!r}, {r[metric]!r} in {path} are not"
                " numbers; pick numeric columns."
            ) from None
    return {k: tuple(np.array(sorted(v)).T) for k, v in points.items()}


def fit_groups(groups: Groups, num_bootstrap: int) -> dict[str, scaling.PowerLaw]:
    """A power law per group with at least two distinct x values."""
    return {
        k: scaling.fit_power_law(x, err, num_bootstrap)
        for k, (x, err) in groups.items()
        if len(np.unique(x)) >= 2
    }


def plot(groups: Groups, fits: dict[str, scaling.PowerLaw], x: str, metric: str, out: Path):
    fig, ax = plt.subplots(figsize=(6, 4.2))
    for label, (xs, err) in groups.items():
        (line,) = ax.plot(xs, err, "o-", label=label)
        if label in fits:
            grid = np.geomspace(xs.min(), xs.max(), 50)
            f = fits[label]
            ax.plot(
                grid,
                f(grid),
                "--",
                color=line.get_color(),
                alpha=0.7,
                label=f"fit: {f.beta:.3g} x^{f.alpha:.3f}",
            )
    ax.set(xscale="log", yscale="log", xlabel=x, ylabel=f"error = 1 - {metric}")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(out, dpi=120)
    plt.close(fig)


def table(fits: dict[str, scaling.PowerLaw], x: str, metric: str) -> str:
    """Markdown: one row per group, alpha and beta with their bootstrap intervals."""
    lines = [
        f"Fit: 1 - {metric} = beta x {x}^alpha (least squares in log-log; 95% bootstrap"
        " intervals over points).",
        "",
        "| group | points | alpha | alpha 95% CI | beta | beta 95% CI |",
        "|---|---|---|---|---|---|",
    ]
    for label, f in fits.items():
        lines.append(
            f"| {label} | {f.n} | {f.alpha:.4f} | [{f.alpha_ci[0]:.4f}, {f.alpha_ci[1]:.4f}]"
            f" | {f.beta:.4g} | [{f.beta_ci[0]:.4g}, {f.beta_ci[1]:.4g}] |"
        )
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--csv", required=True, help="a sweep's results.csv, local or gs://")
    parser.add_argument("--out", required=True, type=Path, help="OUT.png and OUT.md")
    parser.add_argument("--x", default="compute_flops", help="the CSV column on the x axis")
    parser.add_argument("--metric", default="zeroshot_top1", help="error = 1 - metric")
    parser.add_argument("--group", default="loss,model", help="columns that make a group")
    parser.add_argument("--bootstrap", type=int, default=1000)
    args = parser.parse_args()

    group = [g for g in args.group.split(",") if g]
    groups = read_groups(args.csv, args.x, args.metric, group)
    fits = fit_groups(groups, args.bootstrap)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    plot(groups, fits, args.x, args.metric, args.out.with_suffix(".png"))
    args.out.with_suffix(".md").write_text(table(fits, args.x, args.metric))
    print(table(fits, args.x, args.metric), end="")
    print(f"Wrote {args.out.with_suffix('.png')} and {args.out.with_suffix('.md')}")


if __name__ == "__main__":
    errors.run(main)
