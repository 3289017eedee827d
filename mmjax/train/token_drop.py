"""Token dropping by training phase: FLIP's unmasked tuning at the end of a run.

`config.model.towers.<m>.token_drop_until = S` (S > 0) turns tower m's token dropping off
from step S on (the first S steps drop, as FLIP's pre-training; the rest see every token,
as its unmasked tuning). Token counts are static shapes, so each phase (a range of steps
and the towers that drop tokens in it) is a grad function of its own model; their
parameters are the same. The train step stays one compiled program: `lax.switch` on the
step picks the phase's grad function at run time. The other way, one compiled step per
phase swapped by the loop, would check only the first phase's memory before training and
compile again mid-run; with the switch the compiled step's memory covers every phase (the
unmasked one is the largest) and nothing recompiles, at the cost of compiling each phase's
graph into the same program.
"""

from collections.abc import Callable

import jax
import jax.numpy as jnp
import ml_collections

from mmjax.models import Model, build_model

GradFn = Callable  # (params, batch, keys) -> ((loss, metrics), grads)


def phase_starts(config: ml_collections.ConfigDict) -> tuple[int, ...]:
    """0 and every step at which some tower stops dropping tokens, sorted."""
    ends = {
        int(c.get("token_drop_until", 0))
        for c in config.model.towers.values()
        if c.get("token_drop", 0.0) > 0
    }
    return (0, *sorted(e for e in ends if e > 0))


def phase_model_config(model: ml_collections.ConfigDict, start: int) -> ml_collections.ConfigDict:
    """`config.model` as it is from step `start` on: towers past their `token_drop_until`
    keep every token."""
    c = ml_collections.ConfigDict(model.to_dict())
    for tower in c.towers.values():
        until = tower.get("token_drop_until", 0)
        if 0 < until <= start:
            tower.token_drop = 0.0
    return c


def phased_grad_fn(
    model: Model, config: ml_collections.ConfigDict, make: Callable[[Model], GradFn]
) -> Callable:
    """`grad_fn(step, params, batch, keys)`: `make(model)`'s grad function for the phase
    that step (0-based, the state's count of steps done) is in."""
    starts = phase_starts(config)
    models = [model] + [
        build_model(phase_model_config(config.model, s), config.objectives) for s in starts[1:]
    ]
    fns = [make(m) for m in models]
    if len(fns) == 1:
        return lambda step, *args: fns[0](*args)
    boundaries = jnp.asarray(starts[1:], jnp.int32)

    def grad_fn(step: jax.Array, *args):
        phase = jnp.searchsorted(boundaries, step, side="right")
        return jax.lax.switch(phase, fns, *args)

    return grad_fn
