"""MoCo-style queues of past embeddings in the train state (He et al. 2020).

A term with `queue_size` Q > 0 keeps the last Q y-side rows of its teacher (the stopped
student's embeddings, or with `teacher="ema"` the EMA model's) in `TrainState.queues`,
sharded over the batch axes, and reads them as more negatives (losses/queue.py). Each step
reads the queue as it was before the step, then writes the step's rows of the global batch
at the pointer (first in, first out; Q must be a multiple of the rows per step). The queue
is part of the state: checkpointed with it, and restored onto any mesh from its global
value, so a resumed run sees the same negatives. A skipped (non-finite) step pushes
nothing.
"""

import jax
import jax.numpy as jnp

from mmjax.losses.objectives import QUEUE_PREFIX, QUEUE_PUSH_PREFIX, QUEUE_VALID_PREFIX


def batch_entries(queues: dict | None) -> dict[str, jax.Array]:
    """{"queue/<term>": rows [Q, d], "queue_valid/<term>": [Q] bool}: what the losses read."""
    out = {}
    for name, q in (queues or {}).items():
        size = q["rows"].shape[0]
        out[QUEUE_PREFIX + name] = q["rows"]
        out[QUEUE_VALID_PREFIX + name] = jnp.arange(size) < q["filled"]
    return out


def pop_pushed(metrics: dict) -> tuple[dict[str, jax.Array], dict]:
    """({term: this step's rows}, the metrics without them)."""
    pushed = {
        k[len(QUEUE_PUSH_PREFIX) :]: v
        for k, v in metrics.items()
        if k.startswith(QUEUE_PUSH_PREFIX)
    }
    rest = {k: v for k, v in metrics.items() if not k.startswith(QUEUE_PUSH_PREFIX)}
    return pushed, rest


def push(queues: dict, pushed: dict[str, jax.Array], applied: jax.Array) -> dict:
    """Each term's rows written at its pointer (FIFO), if the step was `applied`."""
    out = dict(queues)
    for name, new in pushed.items():
        q = queues[name]
        size, n = q["rows"].shape[0], new.shape[0]
        if size % n:
            raise ValueError(
                f"config.objectives.{name}.queue_size={size} is not a multiple of the {n} rows"
                f" a step adds; use a multiple of {n}."
            )
        rows = jax.lax.dynamic_update_slice_in_dim(
            q["rows"], new.astype(q["rows"].dtype), q["pointer"], 0
        )
        written = {
            "rows": rows,
            "pointer": (q["pointer"] + n) % size,
            "filled": jnp.minimum(q["filled"] + n, size),
        }
        out[name] = jax.tree.map(lambda a, b: jnp.where(applied, a, b), written, q)
    return out
