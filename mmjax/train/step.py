"""One training step: normalise, embed, contrastive loss (shard_map island), AdamW."""

from collections.abc import Callable

import flax.linen as nn
import jax
import jax.numpy as jnp
import optax

from mmjax.train import accumulate
from mmjax.train.state import TrainState

# CLIP's image normalisation, applied on the device to the uint8 batch from the host.
CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)


def normalize_images(images: jax.Array) -> jax.Array:
    """uint8 [..., 3] -> float32, scaled to [0, 1] then standardised per channel."""
    x = images.astype(jnp.float32) / 255.0
    return (x - jnp.asarray(CLIP_MEAN)) / jnp.asarray(CLIP_STD)


def make_grad_fn(model: nn.Module, loss_fn: Callable, accum_steps: int = 1) -> Callable:
    """`grad_fn(params, batch) -> ((loss, aux), grads)` for a uint8 image + tokens batch.

    `loss_fn` is the sharded loss (`losses.sharded_loss`): global embeddings in,
    replicated loss out. With `accum_steps` > 1 the batch is processed in that many
    micro-batches with the exact full-batch gradient (train/accumulate.py).
    """
    if accum_steps > 1:
        return accumulate.make_accumulated_grad_fn(model, loss_fn, accum_steps, normalize_images)

    def loss_of(params, batch: dict):
        images = normalize_images(batch["image"])
        out = model.apply({"params": params}, images, batch["tokens"])
        loss, metrics = loss_fn(out["image"], out["text"], out["scale"], out["bias"])
        return loss, dict(metrics, scale=out["scale"], bias=out["bias"])

    return jax.value_and_grad(loss_of, has_aux=True)


def make_train_step(
    model: nn.Module,
    loss_fn: Callable,
    tx: optax.GradientTransformation,
    schedule: optax.Schedule,
    accum_steps: int = 1,
) -> Callable[[TrainState, dict], tuple[TrainState, dict]]:
    """`train_step(state, batch) -> (state, metrics)`, pure; jit it with shardings."""
    grad_fn = make_grad_fn(model, loss_fn, accum_steps)

    def train_step(state: TrainState, batch: dict) -> tuple[TrainState, dict]:
        (loss, metrics), grads = grad_fn(state.params, batch)
        grad_norm = optax.tree.norm(grads)
        updates, opt_state = tx.update(grads, state.opt_state, state.params)
        params = optax.apply_updates(state.params, updates)
        # A non-finite loss or gradient drops the whole update: parameters and optimizer
        # moments stay as they were; the step and the data position still advance.
        finite = jnp.isfinite(loss) & jnp.isfinite(grad_norm)
        keep = lambda new, old: jax.tree.map(lambda a, b: jnp.where(finite, a, b), new, old)
        in_a_row = jnp.where(finite, 0, state.skipped_in_a_row + 1)
        new_state = state.replace(
            step=state.step + 1,
            params=keep(params, state.params),
            opt_state=keep(opt_state, state.opt_state),
            skipped=state.skipped + (~finite).astype(jnp.int32),
            skipped_in_a_row=in_a_row,
        )
        metrics = dict(
            metrics,
            loss=loss,
            grad_norm=grad_norm,
            lr=schedule(state.step),
            skipped=new_state.skipped,
            skipped_in_a_row=in_a_row,
        )
        return new_state, metrics

    return train_step
