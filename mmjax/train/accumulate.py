"""Exact gradient accumulation for contrastive objectives (GradCache, Gao et al. 2021).

Splitting a contrastive batch into micro-batches and summing their gradients is NOT
the gradient of the big batch: each micro-batch would only see its own negatives. The
exact way, in three passes:
  1. run every micro-batch through the towers without keeping activations;
  2. compute the objective over the full batch and its gradient with respect to every
     tower output (embeddings, token features) and the terms' scales and biases;
  3. run each micro-batch through the towers again under `jax.vjp` and pull its output
     gradients back to the parameters, summing over micro-batches.
Activations live for one micro-batch at a time, so the step's activation memory
follows the micro-batch; the objective sees the whole batch. Works for any set of towers
and every loss in the registry, ring losses included. Each micro-batch carries its
examples' PRNG keys, so passes 1 and 3 draw identical masks, equal to the full batch's.
"""

from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp

from mmjax.losses.objectives import Objective


def split(x: jax.Array, k: int) -> jax.Array:
    """[B, ...] -> [k, B/k, ...] with micro-batch j = rows j, j+k, j+2k, ...

    Strided, not contiguous: with the batch sharded over devices in contiguous
    blocks, every micro-batch then takes rows from every device, so no device idles.
    """
    return jnp.swapaxes(x.reshape(x.shape[0] // k, k, *x.shape[1:]), 0, 1)


def merge(x: jax.Array) -> jax.Array:
    """The inverse of `split`: [k, B/k, ...] -> [B, ...] in the original row order."""
    return jnp.swapaxes(x, 0, 1).reshape(-1, *x.shape[2:])


def _differentiable(x: Any) -> bool:
    return jnp.issubdtype(x.dtype, jnp.inexact)


def partition(tree: Any) -> tuple[Any, Any]:
    """(float leaves, other leaves such as token masks), each with None elsewhere."""
    diff = jax.tree.map(lambda x: x if _differentiable(x) else None, tree)
    rest = jax.tree.map(lambda x: None if _differentiable(x) else x, tree)
    return diff, rest


def combine(a: Any, b: Any) -> Any:
    return jax.tree.map(lambda x, y: y if x is None else x, a, b, is_leaf=lambda x: x is None)


def make_accumulated_grad_fn(
    forward: Callable,
    logits_fn: Callable,
    objective: Objective,
    accum_steps: int,
    split_batch: Callable,
) -> Callable:
    """`grad_fn(params, batch, keys) -> ((loss, aux), grads)`, equal to the full-batch one.

    `forward(params, inputs, keys) -> {modality: outputs}`; `logits_fn(params) -> {term:
    (scale, bias)}`; `split_batch(batch) -> (tower inputs, other entries)`.
    """
    k = accum_steps

    def grad_fn(params, batch: dict, keys: jax.Array):
        inputs, extras = split_batch(batch)
        micro = (jax.tree.map(lambda x: split(x, k), inputs), split(keys, k))
        # 1. Every output, one micro-batch at a time, nothing kept for a backward pass.
        outputs = jax.tree.map(merge, jax.lax.map(lambda mb: forward(params, *mb), micro))
        diff, rest = partition(outputs)
        logits, pull_logits = jax.vjp(logits_fn, params)
        # 2. The objective over the whole batch, and its gradient at every output.
        (loss, metrics), (g_out, g_logits) = jax.value_and_grad(
            lambda d, lg: objective(combine(d, rest), lg, extras), argnums=(0, 1), has_aux=True
        )(diff, logits)
        # 3. Each micro-batch again, its output gradients pulled back to the parameters.
        (grads,) = pull_logits(g_logits)

        def accumulate(total, xs):
            mb, g = xs
            _, pull = jax.vjp(lambda p: partition(forward(p, *mb))[0], params)
            (g_params,) = pull(g)
            return jax.tree.map(jnp.add, total, g_params), None

        g_micro = jax.tree.map(lambda x: split(x, k), g_out)
        grads, _ = jax.lax.scan(accumulate, grads, (micro, g_micro))
        return (loss, metrics), grads

    return grad_fn
