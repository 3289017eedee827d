"""One workdir, one run: refuse to mix a different config into an existing run.

`config.json` records the config of the run. Restarting with a config that would
compute something else (another model, batch, schedule, data) fails unless the user
passes --overwrite, and even then the old config is kept beside the new one. Fields
that only change how a run is operated (logging, checkpoint cadence, evaluations,
mesh and processes, elastic restarts) may change freely. `config.json` is written only
once the run has started, so a start that failed never blocks the corrected one.
"""

import json
import logging
import time

import jax
import ml_collections

from mmjax import storage
from mmjax.errors import UserError
from mmjax.parallel import agree

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


class WorkdirConfigError(UserError, RuntimeError):
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


class StartRecord:
    """What a run records in its workdir once it has really started: `config.json`.

    `prepare` only checks; `commit` writes, when the state is built and the step
    compiled, so a start that fails before that (a typo in a config value, missing
    data) leaves nothing that makes the corrected command need --overwrite.
    """

    def __init__(self, workdir: str, text: str, replaces: list[str]):
        self.workdir = workdir
        self.path = storage.join(workdir, "config.json")
        self._text = text
        self._replaces = replaces  # differences from the config.json it replaces (--overwrite)
        self.committed = False

    def commit(self) -> None:
        """Writes config.json, once, on process 0, between barriers: every process has
        started before it is written, and none reads on before it is there."""
        if self.committed:
            return
        agree.barrier("started", timeout_s=START_TIMEOUT_S)
        if jax.process_index() == 0:
            if self._replaces and storage.exists(self.path):
                stamp = time.strftime("%Y%m%d-%H%M%S")
                kept = storage.join(self.workdir, f"config.{stamp}.json")
                storage.rename(self.path, kept)
                logging.warning(
                    "--overwrite: config differs (%s); old config kept as %s.", self._replaces, kept
                )
            storage.write_text(self.path, self._text)
        agree.barrier("config_written")
        self.committed = True


# Processes compile their steps and restore at their own pace: wait long for the others.
START_TIMEOUT_S = 3600.0


def _differences_on_disk(path: str, new: dict) -> list[str]:
    if not storage.exists(path):
        return []
    return config_differences(json.loads(storage.read_text(path)), new)


def prepare(
    workdir: str, config: ml_collections.ConfigDict, overwrite: bool = False
) -> StartRecord:
    """Checks `workdir/config.json` against `config`; returns the record to `commit`.

    Process 0 reads and compares, and every process gets its verdict, so all of them
    refuse or all go on.
    """
    path = storage.join(workdir, "config.json")
    new = json.loads(config.to_json_best_effort())
    diffs = agree.broadcast(
        "config_check", _differences_on_disk(path, new) if jax.process_index() == 0 else None
    )
    if diffs and not overwrite:
        shown = "; ".join(diffs[:5]) + (f"; and {len(diffs) - 5} more" if len(diffs) > 5 else "")
        raise WorkdirConfigError(
            f"{workdir} holds a run with a different config ({shown}). Use another"
            " --workdir, or pass --overwrite to continue this run with the new config"
            " (the old config is kept as config.<time>.json)."
        )
    return StartRecord(workdir, config.to_json_best_effort(indent=2, sort_keys=True), diffs)
