"""Losses with more negatives from a queue of past embeddings (MoCo, He et al. 2020), and
self-distillation against a teacher's embeddings.

The queue (`y_queue` [Q, d], with `y_queue_valid` [Q]: rows not filled yet are False) holds
y-side embeddings of earlier steps (the stopped student's, or the EMA teacher's: the
term's `teacher`); it lives in the train state (train/queue.py), sharded over the batch
axes like the batch itself, so here each device holds Q / devices rows and gathers them.

- `softmax_queue`: CLIP's symmetric InfoNCE whose x->y direction also scores every valid
  queue row as a negative: row i's loss is -log(e^{l_ii} / (sum_j e^{l_ij} + sum_q e^{s <x_i,
  u_q>})); y->x is unchanged (the queue has no x side).
- `distill`: the student's x (a masked or cropped view) against the teacher's y_teacher
  (the full view), InfoNCE x -> y_teacher over the global batch (MoCo v3's form); the
  teacher gets no gradient. `moco`: the same with the queue's rows as more negatives
  (MoCo v2's queue of keys).
"""

import jax
import jax.numpy as jnp

from mmjax.losses.contrastive import AxisName, _row_terms, gather, local_offset
from mmjax.losses.registry import LOSSES


def _with_queue(queries, keys, queue, valid, scale, offset):
    """Per-row softplus(lse_negatives - positive) and correctness of queries against the
    gathered keys (positive at offset + row) and the valid queue rows (all negatives)."""
    logits = (queries * scale) @ keys.T
    extra = jnp.where(valid[None, :], (queries * scale) @ queue.T, -jnp.inf)
    target = offset + jnp.arange(queries.shape[0])
    is_positive = target[:, None] == jnp.arange(keys.shape[0])[None, :]
    positive = jnp.where(is_positive, logits, 0.0).sum(1)
    neg = jnp.concatenate([jnp.where(is_positive, -jnp.inf, logits), extra], axis=1)
    loss = jax.nn.softplus(jax.nn.logsumexp(neg, axis=1) - positive)
    return loss, positive > neg.max(1)


def _mean(values: list[jax.Array], axis_name: AxisName, n: int) -> list[jax.Array]:
    sums = jax.lax.psum(jnp.stack([v.sum() for v in values]), axis_name)
    return [sums[i] / n for i in range(len(values))]


@LOSSES.register("softmax_queue")
def softmax_queue_loss(
    x: jax.Array,
    y: jax.Array,
    scale: jax.Array,
    bias: jax.Array,
    *,
    axis_name: AxisName,
    y_queue: jax.Array,
    y_queue_valid: jax.Array,
) -> tuple[jax.Array, dict[str, jax.Array]]:
    """Symmetric InfoNCE with the queue's rows as extra x->y negatives (module docstring)."""
    del bias
    x, y, s = x.astype(jnp.float32), y.astype(jnp.float32), scale.astype(jnp.float32)
    queue = jax.lax.stop_gradient(gather(y_queue, axis_name)).astype(jnp.float32)
    valid = gather(y_queue_valid, axis_name)
    b = x.shape[0]
    offset = local_offset(b, axis_name)
    x2y, x2y_ok = _with_queue(x, gather(y, axis_name), queue, valid, s, offset)
    y2x, y2x_ok = _row_terms(y, gather(x, axis_name), s, offset)
    n = b * jax.lax.axis_size(axis_name)
    m = _mean([x2y, y2x, x2y_ok, y2x_ok], axis_name, n)
    metrics = {"loss_x2y": m[0], "loss_y2x": m[1], "acc_x2y": m[2], "acc_y2x": m[3]}
    return (m[0] + m[1]) / 2, metrics


def _distill(x, scale, y_teacher, queue, valid, axis_name):
    x, s = x.astype(jnp.float32), scale.astype(jnp.float32)
    teacher = jax.lax.stop_gradient(gather(y_teacher, axis_name)).astype(jnp.float32)
    b = x.shape[0]
    loss, ok = _with_queue(x, teacher, queue, valid, s, local_offset(b, axis_name))
    m = _mean([loss, ok], axis_name, b * jax.lax.axis_size(axis_name))
    return m[0], {"loss_x2y": m[0], "acc_x2y": m[1]}


@LOSSES.register("distill")
def distill_loss(
    x: jax.Array,
    y: jax.Array,
    scale: jax.Array,
    bias: jax.Array,
    *,
    axis_name: AxisName,
    y_teacher: jax.Array,
) -> tuple[jax.Array, dict[str, jax.Array]]:
    """InfoNCE of the student's x against the teacher's y (no gradient to the teacher)."""
    del y, bias
    none = jnp.zeros((0, x.shape[-1]), jnp.float32), jnp.zeros((0,), bool)
    return _distill(x, scale, y_teacher, *none, axis_name)


@LOSSES.register("moco")
def moco_loss(
    x: jax.Array,
    y: jax.Array,
    scale: jax.Array,
    bias: jax.Array,
    *,
    axis_name: AxisName,
    y_teacher: jax.Array,
    y_queue: jax.Array,
    y_queue_valid: jax.Array,
) -> tuple[jax.Array, dict[str, jax.Array]]:
    """`distill` with the queue's rows as more negatives (MoCo)."""
    del y, bias
    queue = jax.lax.stop_gradient(gather(y_queue, axis_name)).astype(jnp.float32)
    return _distill(x, scale, y_teacher, queue, gather(y_queue_valid, axis_name), axis_name)
