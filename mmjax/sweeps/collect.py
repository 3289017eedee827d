"""Finished workdirs -> table rows, with columns after Cherti et al. 2023's tables.

A run is finished when its metrics.jsonl has a line at total_steps and its checkpoint at
total_steps exists (the loop writes the last metrics, evaluates, then saves): a run
killed at any point before the end is not finished, and a re-run resumes it.
"""

import csv
import io
import json
from typing import Any

import ml_collections

from mmjax import checkpoint_files, optim, storage
from mmjax.storage import PathLike
from mmjax.sweeps import flops

WALL_FILE = "sweep_wall.json"  # written by tools/sweep.py: seconds the run took here

# Metric in metrics.jsonl -> column. Missing metrics leave the column empty.
METRIC_COLUMNS = {
    "zeroshot/top1": "zeroshot_top1",
    "zeroshot/top5": "zeroshot_top5",
    "retrieval/i2t_recall@1": "i2t_recall@1",
    "retrieval/t2i_recall@1": "t2i_recall@1",
    "loss": "train_loss",
}
COLUMNS = [
    "run",
    "model",
    "samples_seen",
    "global_batch",
    "loss",
    "data",
    *METRIC_COLUMNS.values(),
    "params",
    "gflops_per_sample",
    "compute_flops",
    "lr",
    "warmup_steps",
    "steps",
    "wall_s",
]


def final_metrics(workdir: PathLike) -> tuple[int, dict[str, float]]:
    """(last step, the last value of every metric) from a workdir's metrics.jsonl."""
    step, merged = 0, {}
    for line in storage.iter_lines(storage.join(workdir, "metrics.jsonl")):
        record = json.loads(line)
        step = max(step, record.pop("step"))
        merged.update(record)
    return step, merged


def latest_checkpoint(workdir: PathLike) -> int | None:
    """The newest complete checkpoint step (interrupted saves ignored)."""
    return max(checkpoint_files.finished_steps(storage.join(workdir, "checkpoints")), default=None)


def is_finished(workdir: PathLike, total_steps: int) -> bool:
    step, _ = final_metrics(workdir)
    return step >= total_steps and latest_checkpoint(workdir) == total_steps


def _model_name(config: ml_collections.ConfigDict) -> str:
    """ "image:vit+text:text", with the ViT variant and size where there is one."""
    parts = []
    for name, t in config.model.towers.items():
        kind = t.get("variant", t.type)
        data = config.data.modalities.get(name)
        size = f"@{data.size}px" if data is not None and "size" in data else ""
        parts.append(f"{name}:{kind}{size}")
    return "+".join(parts)


def wall_seconds(workdir: PathLike) -> float | None:
    """The training time tools/sweep.py recorded for a run, if any."""
    path = storage.join(workdir, WALL_FILE)
    return json.loads(storage.read_text(path))["wall_s"] if storage.exists(path) else None


def row(name: str, workdir: PathLike, config: ml_collections.ConfigDict) -> dict[str, Any]:
    """One table row for a finished run."""
    _, metrics = final_metrics(workdir)
    samples = config.total_steps * config.batch_size
    wall = wall_seconds(workdir)
    out = {
        "run": name,
        "model": _model_name(config),
        "samples_seen": samples,
        "global_batch": config.batch_size,
        "loss": "+".join(t.loss for t in config.objectives.values()),
        "data": config.data.source,
        **{col: metrics.get(key, "") for key, col in METRIC_COLUMNS.items()},
        "params": flops.param_count(config),
        "gflops_per_sample": flops.forward_flops_per_sample(config) / 1e9,
        "compute_flops": flops.training_flops(config, samples),
        "lr": optim.peak_lr(config),
        "warmup_steps": config.schedule.warmup_steps,
        "steps": config.total_steps,
        "wall_s": "" if wall is None else wall,
    }
    return out


def write_csv(path: PathLike, rows: list[dict[str, Any]]) -> None:
    """The table as CSV, local or in a bucket."""
    out = io.StringIO(newline="")
    writer = csv.DictWriter(out, fieldnames=COLUMNS)
    writer.writeheader()
    writer.writerows(rows)
    storage.write_text(path, out.getvalue())
