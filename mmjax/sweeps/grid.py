"""A sweep spec -> one `Run` per point of its grid, each with a stable workdir name.

A spec (what `configs/sweeps/*.py:get_sweep()` returns) is a dict:

    config:  "configs/demo.py[:arg]", the base config of every run
    grid:    {axis: values}; the runs are the product of the axes, in order. An axis
             whose values are a list sets the config field of that name ("batch_size",
             "model.embed_dim"); an axis whose values are a dict names variants, each a
             dict of overrides ({"sigmoid": {"loss.name": "sigmoid", ...}}). The axis
             "samples_seen" is special: it fixes total_steps = samples_seen / batch_size,
             so runs of different batch sizes see the same data.
    fixed:   overrides given to every run (optional)
    warmup_fraction: if set, schedule.warmup_steps = max(1, round(fraction x total_steps)),
             so that a short large-batch run is not all warmup (optional)

The name of a run is its grid point, `axis=value` joined by "+", so a re-run finds its
workdir again and a reader knows a run by its folder.
"""

import dataclasses
import itertools
import re
from typing import Any

SAMPLES_SEEN = "samples_seen"


@dataclasses.dataclass(frozen=True)
class Run:
    """One point of the grid: its name, grid labels and the config overrides it needs."""

    name: str
    labels: dict[str, Any]
    overrides: dict[str, Any]


def _label(value: Any) -> str:
    text = repr(value) if isinstance(value, float) else str(value)
    return re.sub(r"[^A-Za-z0-9.\-]", "_", text)


def run_name(labels: dict[str, Any]) -> str:
    """{"batch_size": 32, "loss": "sigmoid"} -> "batch_size=32+loss=sigmoid" (path-safe)."""
    return "+".join(f"{_label(k)}={_label(v)}" for k, v in labels.items())


def _axis_points(axis: str, values: Any) -> list[tuple[Any, dict[str, Any]]]:
    """(label, overrides) for each value of one axis."""
    if isinstance(values, dict):
        return [(label, dict(overrides)) for label, overrides in values.items()]
    if axis == SAMPLES_SEEN:
        return [(v, {}) for v in values]
    return [(v, {axis: v}) for v in values]


def total_steps(samples_seen: int, batch_size: int) -> int:
    """Steps that see `samples_seen` examples; refuses a batch that does not divide it."""
    if samples_seen % batch_size:
        raise ValueError(
            f"samples_seen={samples_seen} is not a multiple of batch_size={batch_size}:"
            " the runs would not see the same data."
        )
    return samples_seen // batch_size


def expand(spec: dict[str, Any], base_batch_size: int) -> list[Run]:
    """Every run of the sweep, in grid order (the first axis varies slowest)."""
    grid = spec["grid"]
    axes = list(grid)
    runs = []
    for point in itertools.product(*(_axis_points(a, grid[a]) for a in axes)):
        labels = {a: label for a, (label, _) in zip(axes, point)}
        overrides = dict(spec.get("fixed", {}))
        for _, o in point:
            overrides.update(o)
        if SAMPLES_SEEN in labels:
            batch = overrides.get("batch_size", base_batch_size)
            overrides["total_steps"] = total_steps(labels[SAMPLES_SEEN], batch)
        fraction = spec.get("warmup_fraction")
        if fraction is not None and "total_steps" in overrides:
            overrides["schedule.warmup_steps"] = max(1, round(fraction * overrides["total_steps"]))
        runs.append(Run(run_name(labels), labels, overrides))
    names = [r.name for r in runs]
    if len(set(names)) != len(names):
        raise ValueError(f"Two runs of the sweep share a name: {names}.")
    return runs
