"""AdamW with masked weight decay, a learning-rate schedule and global-norm clipping."""

from collections.abc import Callable
from typing import Any

import jax
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


def make_schedule(config: ml_collections.ConfigDict) -> optax.Schedule:
    return SCHEDULES.get(config.schedule.name)(config.optim.lr, config.total_steps, config.schedule)


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


def make_optimizer(
    config: ml_collections.ConfigDict,
) -> tuple[optax.GradientTransformation, Callable]:
    """(optimizer, schedule) from `config.optim` and `config.schedule`."""
    c = config.optim
    schedule = make_schedule(config)
    parts = [optax.clip_by_global_norm(c.grad_clip)] if c.grad_clip > 0 else []
    parts.append(
        optax.adamw(
            schedule, b1=c.b1, b2=c.b2, eps=c.eps, weight_decay=c.weight_decay, mask=decay_mask
        )
    )
    return optax.chain(*parts), schedule
