"""Exponential moving average of the trainable parameters (Polyak averaging).

    ema_0 = params_0,   ema_t = decay * ema_{t-1} + (1 - decay) * params_t

after every applied update (a skipped, non-finite step leaves it as it was). It lives in
`TrainState.ema`, shaped like the trainable parameters (frozen ones are not averaged:
they never change), sharded like them and checkpointed with them; evaluators select it
with `weights="ema"` or `"both"` (mmjax/evals/registry.py), and an objective term with
`teacher="ema"` reads the EMA model's embeddings of the batch as its teacher (a
mean teacher, Tarvainen & Valpola 2017; DINO's), computed here before the step's forward.
"""

from collections.abc import Sequence
from typing import Any

import jax
import jax.numpy as jnp

from mmjax.losses.objectives import EMA_TEACHER_PREFIX
from mmjax.train import accumulate


def update(ema: Any, params: Any, decay: float) -> Any:
    """One EMA step toward `params` (both trees shaped alike), in float32."""
    d = jnp.float32(decay)
    return jax.tree.map(lambda e, p: d * e + (1 - d) * p.astype(e.dtype), ema, params)


def teacher_embeddings(
    model: Any, params: Any, batch: dict, modalities: Sequence[str], accum_steps: int = 1
) -> dict[str, jax.Array]:
    """{"ema_teacher/<modality>": embeddings} of `batch` by the model with `params` (the
    EMA's), in evaluation mode and without gradient; in `accum_steps` micro-batches, so
    that it needs no more activation memory than the step's own forward pass."""
    inputs = {m: batch[m] for m in modalities}

    def embed(x: dict) -> dict[str, jax.Array]:
        out = model.apply({"params": params}, x, train=False)
        return {EMA_TEACHER_PREFIX + m: jax.lax.stop_gradient(out[m]["embedding"]) for m in x}

    if accum_steps == 1:
        return embed(inputs)
    micro = jax.tree.map(lambda x: accumulate.split(x, accum_steps), inputs)
    return jax.tree.map(accumulate.merge, jax.lax.map(embed, micro))
