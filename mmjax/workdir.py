"""One workdir, one run: refuse to mix a different config into an existing run.

`config.json` records the config of the run. Restarting with a config that would
compute something else (another model, batch, schedule, data) fails unless the user
passes --overwrite, and even then the old config is kept beside the new one. Fields
that only change how a run is operated (logging, checkpoint cadence, evaluations,
mesh and processes, elastic restarts) may change freely.
"""

import json
import logging
import os
import time

import jax
import ml_collections

OPERATIONAL = (
    "log_every",
    "ckpt_every",
    "keep_ckpts",
    "check_memory",
    "stop_at_step",
    "max_nonfinite_in_a_row",
    "preemption_check_every",
    "evals",
    "mesh",
    "distributed",
    "data.num_threads",
    "data.prefetch",
)


class WorkdirConfigError(RuntimeError):
    """The workdir holds a run with a different config."""


def _flatten(tree: dict, prefix: str = "") -> dict[str, object]:
    out = {}
    for k, v in tree.items():
        key = f"{prefix}{k}"
        if isinstance(v, dict):
            out.update(_flatten(v, key + "."))
        else:
            out[key] = v
    return out


def config_differences(old: dict, new: dict) -> list[str]:
    """Fields (dotted) whose values differ, ignoring OPERATIONAL ones.

    Only fields present in both count: a field that a newer mmjax added (or removed)
    is not a different run, so upgrading mmjax never blocks a resume.
    """
    a, b = _flatten(old), _flatten(new)
    keys = sorted(set(a) & set(b))
    operational = lambda k: any(k == o or k.startswith(o + ".") for o in OPERATIONAL)
    return [
        f"{k}: {a.get(k)!r} -> {b.get(k)!r}"
        for k in keys
        if a.get(k) != b.get(k) and not operational(k)
    ]


def prepare(workdir: str, config: ml_collections.ConfigDict, overwrite: bool = False) -> None:
    """Checks `workdir/config.json` against `config`, then records `config` there."""
    path = os.path.join(workdir, "config.json")
    new = json.loads(config.to_json_best_effort())
    if os.path.exists(path):
        with open(path) as f:
            old = json.load(f)
        diffs = config_differences(old, new)
        if diffs and not overwrite:
            shown = "; ".join(diffs[:5]) + (
                f"; and {len(diffs) - 5} more" if len(diffs) > 5 else ""
            )
            raise WorkdirConfigError(
                f"{workdir} holds a run with a different config ({shown}). Use another"
                " --workdir, or pass --overwrite to continue this run with the new config"
                " (the old config is kept as config.<time>.json)."
            )
        if diffs and jax.process_index() == 0:
            kept = os.path.join(workdir, f"config.{time.strftime('%Y%m%d-%H%M%S')}.json")
            os.replace(path, kept)
            logging.warning("--overwrite: config differs (%s); old config kept as %s.", diffs, kept)
    if jax.process_index() == 0:
        os.makedirs(workdir, exist_ok=True)
        with open(path, "w") as f:
            f.write(config.to_json_best_effort(indent=2, sort_keys=True))
