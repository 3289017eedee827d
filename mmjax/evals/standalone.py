r"""Standalone evaluation of a checkpoint: every evaluator of `config.evals`, once.

  python -m mmjax.main --mode=eval --config=configs/demo.py --workdir=DIR [--step=N]

Restores the latest (or the named) checkpoint of `DIR/checkpoints` onto the current
mesh, runs every entry of `config.evals` whatever its `every` (0 = standalone only),
prints a table, and appends the results to `DIR/metrics.jsonl` and TensorBoard at the
checkpoint's step, under the same names as in-loop evaluations ("zeroshot/top1").
"""

import logging
import time
from typing import Any

import flax.linen as nn
import jax
import ml_collections

from mmjax import state, storage
from mmjax.checkpoint import Checkpointer, CheckpointError
from mmjax.errors import UserError
from mmjax.evals.registry import EvalContext, build_evaluators
from mmjax.metrics import MetricWriter
from mmjax.parallel import mesh as mesh_lib
from mmjax.parallel import sharding


class NoCheckpointError(UserError, FileNotFoundError):
    """The workdir has no checkpoint (or not the step asked for)."""


def restore_params(
    config: ml_collections.ConfigDict, workdir: str, mesh: Any, step: int | None
) -> tuple[nn.Module, Any, int, Any]:
    """(model, params on the mesh, step, EMA parameters or None) from `workdir`'s latest or
    `step`-th checkpoint. The EMA is read only when the run has one."""
    built = state.build(config, mesh)
    directory = storage.join(workdir, "checkpoints")
    if not storage.isdir(directory):
        raise NoCheckpointError(f"No checkpoint in {storage.absolute(directory)}: no such folder.")
    ckpts = Checkpointer(directory, read_only=True)  # a training run may be saving here
    steps = ckpts.all_steps()
    if not steps or (step and step not in steps):
        wanted = f"step {step}" if step else "checkpoint"
        raise NoCheckpointError(
            f"No {wanted} in {ckpts.directory}; steps there: {steps or 'none'}."
        )
    step = step or steps[-1]
    damaged = ckpts.check(step)
    if damaged:
        ckpts.close()
        raise CheckpointError(
            f"Checkpoint {step} in {ckpts.directory} is damaged ({damaged[0]}"
            f"{f'; and {len(damaged) - 1} more' if len(damaged) > 1 else ''}): evaluate"
            f" another --step ({steps})."
        )
    try:
        params = ckpts.restore_params(step, built.abstract.params)
        ema = None
        if built.abstract.ema is not None:
            averaged = ckpts.restore_params(step, built.abstract.ema, field="ema")
            ema = state.ema_model(averaged, params)  # frozen parameters are not averaged
    except Exception as e:  # unreadable, or another model's
        raise CheckpointError(
            f"Checkpoint {step} in {ckpts.directory} does not restore into this config's model"
            f" ({type(e).__name__}: {str(e)[:300]}). Is --config the run's config?"
        ) from e
    finally:
        ckpts.close()
    return built.model, params, step, ema


def format_table(step: int, results: dict[str, float]) -> str:
    """Results as an aligned table: evaluator, metric, value."""
    rows = [(k.partition("/")[0], k.partition("/")[2], v) for k, v in results.items()]
    w0 = max([len("evaluator")] + [len(r[0]) for r in rows])
    w1 = max([len("metric")] + [len(r[1]) for r in rows])
    lines = [f"Evaluation at step {step}", f"{'evaluator':<{w0}}  {'metric':<{w1}}  value"]
    for name, metric, v in rows:
        value = f"{v:.4f}" if 1e-3 <= abs(v) < 1e3 or v == 0 else f"{v:.3g}"
        lines.append(f"{name:<{w0}}  {metric:<{w1}}  {value}")
    return "\n".join(lines)


def evaluate(
    config: ml_collections.ConfigDict, workdir: str, step: int | None = None
) -> dict[str, float]:
    """Runs every evaluator of `config.evals` on a checkpoint; returns prefixed results."""
    mesh = mesh_lib.make_mesh(config.mesh)
    results: dict[str, float] = {}
    with jax.set_mesh(mesh), nn.logical_axis_rules(sharding.as_rules(config.mesh.rules)):
        model, params, step, ema = restore_params(config, workdir, mesh, step)
        for e in build_evaluators(EvalContext(model, mesh, config)):
            start = time.perf_counter()
            results.update(e.run(params, ema))
            logging.info("%s done in %.1f s.", e.name, time.perf_counter() - start)
    writer = MetricWriter(workdir)
    writer.write(step, results)
    writer.close()
    if jax.process_index() == 0:
        print(format_table(step, results), flush=True)
    return results
