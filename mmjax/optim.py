"""AdamW with parameter groups, a learning-rate schedule and global-norm clipping.

Parameter groups, as PyTorch's and open_clip's param groups or big_vision's `lr_mults` /
`wd_mults`, selected by regexes over parameter names (mmjax/params.py):
  * `optim.lr_mults`: ((regex, multiplier), ...), first match wins: the group's learning
    rate is lr * multiplier (its decoupled weight decay scales with it, as in PyTorch);
  * `optim.wd_mults`: ((regex, multiplier), ...), first match wins: weight decay
    weight_decay * multiplier; unmatched parameters decay only if they are weight matrices
    (`kernel`), not biases, norms, embeddings or the temperature;
  * `optim.layer_decay` < 1: layer-wise learning-rate decay for fine-tuning (BEiT, Bao et
    al. 2022): in a tower of depth L, block i (from 0) trains at lr * decay^(L - i), the stem
    at lr * decay^(L + 1), the final norm, pooling head and projection at lr. Blocks are
    scanned (one stacked leaf), so the multiplier is a vector along the layer axis.
Frozen parameters (`optim.freeze`, locked towers) never reach the optimizer at all: it is
built over the trainable tree only (mmjax/params.py), so they hold no moments.
"""

from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax

from mmjax import params as params_lib
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
    """True where weight decay applies by default (no `optim.wd_mults` rule)."""
    return jax.tree_util.tree_map_with_path(lambda p, _: _leaf_name(p) in _DECAYED, params)


Multipliers = Callable[[Any], Any]  # params -> a tree of floats or per-layer arrays


def wd_multipliers(optim: ml_collections.ConfigDict) -> Multipliers:
    """params -> each leaf's weight-decay multiplier (`optim.wd_mults`, else 1 for kernels)."""
    rules = tuple(optim.get("wd_mults", ()))

    def fn(params: Any) -> Any:
        default = lambda name: 1.0 if name.rpartition("/")[2] in _DECAYED else 0.0
        return params_lib.map_with_names(
            lambda n, _: float(params_lib.first_match(rules, n, default(n))), params
        )

    return fn


def _tower_depths(params: Any) -> dict[str, int]:
    """{tower: depth} from the stacked (scanned) encoder blocks' leading axis."""
    depths = {}
    for name, leaf in zip(params_lib.names(params), jax.tree.leaves(params), strict=True):
        tower, _, rest = name.partition("/")
        if rest.startswith("encoder/blocks/"):
            depths[tower] = int(np.shape(leaf)[0])
    return depths


def layer_scale(name: str, leaf: Any, depths: dict[str, int], decay: float, towers) -> Any:
    """The layer-wise decay multiplier of one parameter (1.0 outside the decayed towers)."""
    tower, _, rest = name.partition("/")
    if tower not in depths or (towers and tower not in towers) or decay == 1.0:
        return 1.0
    depth = depths[tower]
    if rest.startswith("stem/"):
        return decay ** (depth + 1)
    if rest.startswith("encoder/blocks/"):
        scales = decay ** (depth - np.arange(depth, dtype=np.float64))
        return scales.reshape((depth,) + (1,) * (np.ndim(leaf) - 1)).astype(np.float32)
    return 1.0


def lr_multipliers(optim: ml_collections.ConfigDict) -> Multipliers:
    """params -> each leaf's learning-rate multiplier: `optim.lr_mults` times layer decay."""
    rules = tuple(optim.get("lr_mults", ()))
    decay = float(optim.get("layer_decay", 1.0))
    towers = tuple(optim.get("layer_decay_towers", ()))

    def fn(params: Any) -> Any:
        depths = _tower_depths(params)

        def mult(name: str, leaf: Any) -> Any:
            scale = layer_scale(name, leaf, depths, decay, towers)
            return float(params_lib.first_match(rules, name, 1.0)) * scale

        return params_lib.map_with_names(mult, params)

    return fn


def _is_one(m: Any) -> bool:
    return isinstance(m, float) and m == 1.0


def scale_by_multipliers(multipliers: Multipliers) -> optax.GradientTransformation:
    """updates * multiplier, leaf by leaf (a multiplier of exactly 1 leaves it untouched)."""

    def update(updates, state, params=None):
        del params
        mults = multipliers(updates)
        scaled = jax.tree.map(lambda u, m: u if _is_one(m) else u * m, updates, mults)
        return scaled, state

    return optax.GradientTransformation(lambda _: optax.EmptyState(), update)


def add_decayed_weights_by(weight_decay: float, multipliers: Multipliers):
    """updates + weight_decay * multiplier * params (decoupled weight decay, Loshchilov &
    Hutter 2019); leaves of multiplier 0 are left untouched, bit for bit."""

    def update(updates, state, params=None):
        if params is None:
            raise ValueError("Weight decay needs the parameters: pass them to tx.update.")
        mults = multipliers(params)
        add = lambda u, p, m: u if m == 0 or weight_decay == 0 else u + (weight_decay * m) * p
        return jax.tree.map(add, updates, params, mults), state

    return optax.GradientTransformation(lambda _: optax.EmptyState(), update)


def has_groups(optim: ml_collections.ConfigDict) -> bool:
    return bool(
        optim.get("lr_mults", ()) or optim.get("wd_mults", ()) or optim.get("layer_decay", 1.0) != 1
    )


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


def scale_by_adam(c: ml_collections.ConfigDict) -> optax.GradientTransformation:
    """Adam's moments, in `optim.moment_dtype` (optax's own for float32)."""
    if jnp.dtype(c.get("moment_dtype", "float32")) == jnp.float32:
        return optax.scale_by_adam(b1=c.b1, b2=c.b2, eps=c.eps)
    return scale_by_adam_in(c.moment_dtype, c.b1, c.b2, c.eps)


def adamw(config: ml_collections.ConfigDict, schedule: optax.Schedule):
    """AdamW (Loshchilov & Hutter 2019; optax.adamw's order: Adam moments in
    `optim.moment_dtype`, decoupled decay, schedule) with per-group weight-decay and
    learning-rate multipliers; `optax.adamw` itself without groups and with float32
    moments (the same numbers, and the optimizer state of runs that predate both)."""
    c = config.optim
    groups = has_groups(c)
    if not groups and jnp.dtype(c.get("moment_dtype", "float32")) == jnp.float32:
        return optax.adamw(
            schedule, b1=c.b1, b2=c.b2, eps=c.eps, weight_decay=c.weight_decay, mask=decay_mask
        )
    if groups:
        decay = add_decayed_weights_by(c.weight_decay, wd_multipliers(c))
    else:
        decay = optax.add_decayed_weights(c.weight_decay, decay_mask)
    parts = [scale_by_adam(c), decay, optax.scale_by_learning_rate(schedule)]
    if groups:
        parts.append(scale_by_multipliers(lr_multipliers(c)))
    return optax.chain(*parts)


def make_optimizer(
    config: ml_collections.ConfigDict,
) -> tuple[optax.GradientTransformation, Callable]:
    """(optimizer, schedule) from `config.optim` and `config.schedule`."""
    c = config.optim
    schedule = make_schedule(config)
    parts = [optax.clip_by_global_norm(c.grad_clip)] if c.grad_clip > 0 else []
    parts.append(adamw(config, schedule))
    return optax.chain(*parts), schedule
