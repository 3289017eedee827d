"""The loss registry and the shard_map island that every loss runs in.

A loss is a function of this device's rows of two modalities, x and y:

    fn(x, y, scale, bias, *, axis_name, <inputs>, <options>) -> (loss, metrics)

Its keyword-only parameters say what else it takes: those *without* a default are extra
per-example arrays ("inputs", e.g. `x_labels`, `y_tokens`), sharded over the batch like x
and y; those *with* a default are options bound from the config (e.g. `tile_size`).
"""

import dataclasses
import functools
import inspect
from collections.abc import Callable, Mapping
from typing import Any

import jax
from jax.sharding import Mesh, PartitionSpec

from mmjax.parallel.mesh import BATCH_AXES
from mmjax.registry import Registry

LOSSES = Registry("loss")

LossFn = Callable[..., tuple[jax.Array, dict[str, jax.Array]]]


@dataclasses.dataclass(frozen=True)
class Loss:
    """A registered loss with its options bound, and the names of the inputs it needs."""

    name: str
    fn: LossFn  # options bound; still takes axis_name and the inputs
    inputs: tuple[str, ...]
    options: tuple[str, ...]  # every option it accepts (bound or default)


def describe(name: str) -> tuple[tuple[str, ...], dict[str, Any]]:
    """(input names, {option: default}) of the loss `name`, from its signature."""
    params = inspect.signature(LOSSES.get(name)).parameters.values()
    kw = [p for p in params if p.kind is inspect.Parameter.KEYWORD_ONLY and p.name != "axis_name"]
    inputs = tuple(p.name for p in kw if p.default is inspect.Parameter.empty)
    return inputs, {p.name: p.default for p in kw if p.default is not inspect.Parameter.empty}


def get_loss(name: str, options: Mapping[str, Any] | None = None) -> Loss:
    """The loss `name`, given those of `options` that it declares.

    Options it does not declare are ignored, so one term config can carry the options of
    several losses and switching `loss` needs no other edit (a locked config still
    rejects misspelt fields).
    """
    inputs, defaults = describe(name)
    bound = {k: v for k, v in (options or {}).items() if k in defaults}
    return Loss(name, functools.partial(LOSSES.get(name), **bound), inputs, tuple(defaults))


def sharded_loss(loss: Loss, mesh: Mesh) -> Callable[..., tuple[jax.Array, dict]]:
    """`loss` in a shard_map island: global arrays in (batch-sharded on their leading
    axis; scale and bias replicated), replicated loss and metrics out.

    Call it as `f(x, y, scale, bias, **inputs)` with exactly `loss.inputs`.
    """
    batch = PartitionSpec(BATCH_AXES)

    def island(x, y, scale, bias, inputs: dict):
        return loss.fn(x, y, scale, bias, axis_name=BATCH_AXES, **inputs)

    mapped = jax.shard_map(
        island,
        mesh=mesh,
        in_specs=(batch, batch, PartitionSpec(), PartitionSpec(), batch),
        out_specs=(PartitionSpec(), PartitionSpec()),
    )

    def call(x, y, scale, bias, **inputs):
        if set(inputs) != set(loss.inputs):
            raise ValueError(
                f"Loss {loss.name!r} takes inputs {sorted(loss.inputs)}, got {sorted(inputs)}."
            )
        return mapped(x, y, scale, bias, inputs)

    return call
