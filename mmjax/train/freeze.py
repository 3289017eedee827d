"""Frozen parameters in the train step (LiT's locked towers, `optim.freeze` regexes).

The model the grad function sees puts its frozen parameters under `stop_gradient` inside
`apply`, so every gradient taken through it (plain, or GradCache's passes) is symbolically
zero for them: no backward pass runs through a locked tower and none of its activations
are kept for one. The step then hands only the trainable part of the parameters and
gradients to the optimizer (mmjax/params.py), and puts the frozen leaves back untouched.
"""

from collections.abc import Sequence
from typing import Any

import jax

from mmjax import params as params_lib


class StopFrozen:
    """A model whose `apply` stops the gradient at the parameters matching `patterns`.

    Everything else (attributes, methods) is the wrapped model's.
    """

    def __init__(self, model: Any, patterns: Sequence[str]):
        self.model, self.patterns = model, tuple(patterns)

    def apply(self, variables: dict, *args, **kwargs):
        params = variables["params"]
        mask = params_lib.frozen_mask(params, self.patterns)
        stopped = jax.tree.map(lambda x, m: jax.lax.stop_gradient(x) if m else x, params, mask)
        return self.model.apply({**variables, "params": stopped}, *args, **kwargs)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.model, name)


def stop_frozen(model: Any, patterns: Sequence[str]) -> Any:
    """`model` itself when nothing is frozen, else it wrapped in `StopFrozen`."""
    return StopFrozen(model, patterns) if patterns else model
