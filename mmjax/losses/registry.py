"""The loss registry and the shard_map island that every loss runs in."""

import functools
import inspect
from collections.abc import Callable

import jax
import ml_collections
from jax.sharding import Mesh, PartitionSpec

from mmjax.parallel.mesh import BATCH_AXES
from mmjax.registry import Registry

LOSSES = Registry("loss")

LossFn = Callable[..., tuple[jax.Array, dict[str, jax.Array]]]


def get_loss(config: ml_collections.ConfigDict) -> LossFn:
    """The loss named by `config.name`, given the config fields its signature names.

    `config.loss` holds the options of every loss (tile sizes, ...); each loss takes the
    keyword-only options it declares, so switching `name` needs no other edit.
    """
    fn = LOSSES.get(config.name)
    accepted = {
        name
        for name, p in inspect.signature(fn).parameters.items()
        if p.kind is inspect.Parameter.KEYWORD_ONLY and name != "axis_name"
    }
    return functools.partial(fn, **{k: v for k, v in config.items() if k in accepted})


def sharded_loss(loss_fn: LossFn, mesh: Mesh) -> Callable[..., tuple[jax.Array, dict]]:
    """Wraps a loss into a shard_map island: global embeddings in, replicated loss out."""
    batch = PartitionSpec(BATCH_AXES)
    return jax.shard_map(
        functools.partial(loss_fn, axis_name=BATCH_AXES),
        mesh=mesh,
        in_specs=(batch, batch, PartitionSpec(), PartitionSpec()),
        out_specs=(PartitionSpec(), PartitionSpec()),
    )
