"""AdamW with masked weight decay, a learning-rate schedule and global-norm clipping."""

from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import ml_collections
import optax

from mmjax.registry import Registry

SCHEDULES = Registry("schedule")


@SCHEDULES.register("warmup_cosine")
def warmup_cosine(peak: float, total_steps: int, c: ml_collections.ConfigDict) -> optax.Schedule:
    """Linear warmup from 0 to `peak`, then cosine decay to `peak * end_factor`."""
    return optax.warmup_cosine_decay_schedule(
        init_value=0.0,
        peak_value=peak,
        warmup_steps=c.warmup_steps,
        decay_steps=max(total_steps, c.warmup_steps + 1),
        end_value=peak * c.end_factor,
    )


@SCHEDULES.register("warmup_constant_cooldown")
def warmup_constant_cooldown(
    peak: float, total_steps: int, c: ml_collections.ConfigDict
) -> optax.Schedule:
    """Warmup, constant, then a cooldown to `peak * end_factor` over the last steps.

    The constant phase does not depend on the budget, so one long run's checkpoints can
    be cooled down to serve several budgets (Hägele et al. 2024, "Scaling Laws and
    Compute-Optimal Training Beyond Fixed Training Durations"). Cooldown shapes:
    "linear", or "1-sqrt" (their best): lr = peak * (1 - sqrt(progress)).
    """
    cooldown = c.cooldown_steps or round(c.cooldown_fraction * total_steps)
    start = total_steps - cooldown
    if start < c.warmup_steps:
        raise ValueError(
            f"schedule: cooldown of {cooldown} steps overlaps warmup ({c.warmup_steps})"
            f" within total_steps={total_steps}; lower schedule.cooldown_steps/fraction."
        )
    shapes = {"linear": lambda p: 1.0 - p, "1-sqrt": lambda p: 1.0 - jnp.sqrt(p)}
    if c.cooldown_shape not in shapes:
        raise ValueError(f"schedule.cooldown_shape {c.cooldown_shape!r}: use {list(shapes)}.")
    shape, end = shapes[c.cooldown_shape], peak * c.end_factor

    def schedule(step):
        warm = peak * step / max(c.warmup_steps, 1)
        progress = jnp.clip((step - start) / max(cooldown, 1), 0.0, 1.0)
        cooled = end + (peak - end) * shape(progress)
        return jnp.where(step < c.warmup_steps, warm, jnp.where(step < start, peak, cooled))

    return schedule


@SCHEDULES.register("inverse_sqrt")
def inverse_sqrt(peak: float, total_steps: int, c: ml_collections.ConfigDict) -> optax.Schedule:
    """Linear warmup, then peak * sqrt(warmup / step) (Vaswani et al. 2017)."""
    del total_steps
    w = max(c.warmup_steps, 1)
    return lambda step: jnp.where(
        step < w, peak * step / w, peak * jnp.sqrt(w / jnp.maximum(step, 1))
    )


LR_SCALING = {
    "none": lambda batch, base: 1.0,
    "linear": lambda batch, base: batch / base,  # Goyal et al. 2017
    "sqrt": lambda batch, base: (batch / base) ** 0.5,  # Krizhevsky 2014; for Adam
}


def peak_lr(config: ml_collections.ConfigDict) -> float:
    """`optim.lr` scaled from `optim.lr_base_batch` to the run's batch by `optim.lr_scaling`."""
    c = config.optim
    if c.lr_scaling not in LR_SCALING:
        raise ValueError(f"optim.lr_scaling {c.lr_scaling!r}: use one of {list(LR_SCALING)}.")
    return c.lr * LR_SCALING[c.lr_scaling](config.batch_size, c.lr_base_batch)


def make_schedule(config: ml_collections.ConfigDict) -> optax.Schedule:
    name = config.schedule.name
    return SCHEDULES.get(name)(peak_lr(config), config.total_steps, config.schedule)


# Weight decay applies to weight matrices only: not to biases, norms, embeddings
# (token, position, class token, pooling probe) or the temperature and bias.
_DECAYED = ("kernel",)


def _leaf_name(path: tuple[Any, ...]) -> str:
    """The last dict key on a path; Flax partitioning boxes add a `.value` we skip."""
    keys = [k.key for k in path if isinstance(k, jax.tree_util.DictKey)]
    return str(keys[-1]) if keys else ""


def decay_mask(params: Any) -> Any:
    """True where weight decay applies."""
    return jax.tree_util.tree_map_with_path(lambda p, _: _leaf_name(p) in _DECAYED, params)


def scale_by_adam_in(dtype, b1: float, b2: float, eps: float) -> optax.GradientTransformation:
    """Adam's moment estimates stored in `dtype` (bfloat16 halves the optimizer state),
    computed in float32: each step reads the moments, updates them in float32, and
    rounds them once on the way back. The update is `optax.scale_by_adam`'s."""
    dtype = jnp.dtype(dtype)

    def init(params):
        zeros = lambda p: jnp.zeros(p.shape, dtype)
        return optax.ScaleByAdamState(
            count=jnp.zeros([], jnp.int32),
            mu=jax.tree.map(zeros, params),
            nu=jax.tree.map(zeros, params),
        )

    def update(updates, state, params=None):
        del params
        f32 = lambda t: jax.tree.map(lambda x: x.astype(jnp.float32), t)
        g = f32(updates)
        mu = jax.tree.map(lambda m, x: b1 * m + (1 - b1) * x, f32(state.mu), g)
        nu = jax.tree.map(lambda v, x: b2 * v + (1 - b2) * x * x, f32(state.nu), g)
        count = optax.safe_increment(state.count)
        c1, c2 = 1 - b1**count, 1 - b2**count
        out = jax.tree.map(
            lambda m, v, u: ((m / c1) / (jnp.sqrt(v / c2) + eps)).astype(u.dtype), mu, nu, updates
        )
        cast = lambda t: jax.tree.map(lambda x: x.astype(dtype), t)
        return out, optax.ScaleByAdamState(count=count, mu=cast(mu), nu=cast(nu))

    return optax.GradientTransformation(init, update)


def adamw(config: ml_collections.ConfigDict, schedule: optax.Schedule):
    """optax's AdamW (Loshchilov & Hutter 2019), moments in `optim.moment_dtype`."""
    c = config.optim
    if jnp.dtype(c.get("moment_dtype", "float32")) == jnp.float32:
        return optax.adamw(
            schedule, b1=c.b1, b2=c.b2, eps=c.eps, weight_decay=c.weight_decay, mask=decay_mask
        )
    return optax.chain(  # what optax.adamw chains, with the moments' dtype
        scale_by_adam_in(c.moment_dtype, c.b1, c.b2, c.eps),
        optax.add_decayed_weights(c.weight_decay, decay_mask),
        optax.scale_by_learning_rate(schedule),
    )


def make_optimizer(
    config: ml_collections.ConfigDict,
) -> tuple[optax.GradientTransformation, Callable]:
    """(optimizer, schedule) from `config.optim` and `config.schedule`."""
    c = config.optim
    schedule = make_schedule(config)
    parts = [optax.clip_by_global_norm(c.grad_clip)] if c.grad_clip > 0 else []
    parts.append(adamw(config, schedule))
    return optax.chain(*parts), schedule
