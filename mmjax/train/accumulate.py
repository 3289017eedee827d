"""Exact gradient accumulation for contrastive losses (GradCache, Gao et al. 2021).

Splitting a contrastive batch into micro-batches and summing their gradients is NOT
the gradient of the big batch: each micro-batch would only see its own negatives. The
exact way, in three passes:
  1. embed every micro-batch without keeping activations;
  2. compute the loss over the full batch and its gradient with respect to every
     embedding (and the temperature and bias);
  3. embed each micro-batch again under `jax.vjp` and pull its embedding gradient back
     to the parameters, summing over micro-batches.
Activations live for one micro-batch at a time, so the step's activation memory
follows the micro-batch; the embeddings and the loss see the whole batch. Works with
every loss in the registry, ring losses included.
"""

from collections.abc import Callable

import flax.linen as nn
import jax
import jax.numpy as jnp


def split(x: jax.Array, k: int) -> jax.Array:
    """[B, ...] -> [k, B/k, ...] with micro-batch j = rows j, j+k, j+2k, ...

    Strided, not contiguous: with the batch sharded over devices in contiguous
    blocks, every micro-batch then takes rows from every device, so no device idles.
    """
    return jnp.swapaxes(x.reshape(x.shape[0] // k, k, *x.shape[1:]), 0, 1)


def merge(x: jax.Array) -> jax.Array:
    """The inverse of `split`: [k, B/k, ...] -> [B, ...] in the original row order."""
    return jnp.swapaxes(x, 0, 1).reshape(-1, *x.shape[2:])


def make_accumulated_grad_fn(
    model: nn.Module, loss_fn: Callable, accum_steps: int, preprocess: Callable
) -> Callable:
    """`grad_fn(params, batch) -> ((loss, aux), grads)`, equal to the full-batch one."""
    k = accum_steps

    def embed(params, images: jax.Array, tokens: jax.Array) -> tuple[jax.Array, jax.Array]:
        out = model.apply({"params": params}, preprocess(images), tokens)
        return out["image"], out["text"]

    def scale_and_bias(params) -> tuple[jax.Array, jax.Array]:
        return model.apply({"params": params}, method="scale_and_bias")

    def grad_fn(params, batch: dict):
        micro = {key: split(batch[key], k) for key in ("image", "tokens")}
        # 1. Every embedding, one micro-batch at a time, nothing kept for a backward pass.
        image, text = jax.lax.map(lambda mb: embed(params, mb["image"], mb["tokens"]), micro)
        image, text = merge(image), merge(text)
        (scale, bias), pull_scale_bias = jax.vjp(scale_and_bias, params)
        # 2. The loss over the whole batch, and its gradient at every embedding.
        (loss, metrics), (g_image, g_text, g_scale, g_bias) = jax.value_and_grad(
            loss_fn, argnums=(0, 1, 2, 3), has_aux=True
        )(image, text, scale, bias)
        # 3. Each micro-batch again, its embedding gradients pulled back to the params.
        (grads,) = pull_scale_bias((g_scale, g_bias))

        def accumulate(total, xs):
            mb, gi, gt = xs
            _, pull = jax.vjp(lambda p: embed(p, mb["image"], mb["tokens"]), params)
            (g,) = pull((gi, gt))
            return jax.tree.map(jnp.add, total, g), None

        grads, _ = jax.lax.scan(accumulate, grads, (micro, split(g_image, k), split(g_text, k)))
        return (loss, dict(metrics, scale=scale, bias=bias)), grads

    return grad_fn
