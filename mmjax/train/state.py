"""The train state, its shardings, and its initialisation directly onto the mesh."""

from typing import Any

import flax.linen as nn
import flax.struct
import jax
import jax.numpy as jnp
import numpy as np
import optax
from jax.sharding import Mesh

from mmjax.parallel import sharding


class TrainState(flax.struct.PyTreeNode):
    """Everything that changes during training; plain pytrees, float32.

    `skipped` counts steps whose loss or gradient was not finite (their update was
    dropped); `skipped_in_a_row` counts the current run of them.
    """

    step: jax.Array
    params: Any
    opt_state: Any
    skipped: jax.Array
    skipped_in_a_row: jax.Array


def dummy_inputs(image_size: int, context_length: int, batch: int = 1) -> tuple[jax.Array, ...]:
    images = jnp.zeros((batch, image_size, image_size, 3), jnp.float32)
    tokens = jnp.zeros((batch, context_length), jnp.int32)
    return images, tokens


def make_init_fn(model: nn.Module, tx: optax.GradientTransformation, inputs: tuple):
    """rng -> boxed TrainState (params still carry their logical axis names)."""

    def init(rng: jax.Array) -> TrainState:
        params = model.init(rng, *inputs)["params"]
        zero = jnp.zeros((), jnp.int32)
        return TrainState(
            step=zero, params=params, opt_state=tx.init(params), skipped=zero, skipped_in_a_row=zero
        )

    return init


def strip_boxes(tree: Any) -> Any:
    """Removes Flax's partitioning boxes, keeping the values (no sharding constraint)."""
    is_box = lambda x: isinstance(x, nn.Partitioned)
    return jax.tree.map(lambda x: x.value if is_box(x) else x, tree, is_leaf=is_box)


def abstract_state(init_fn, mesh: Mesh, rules) -> tuple[TrainState, TrainState]:
    """(shape/dtype/sharding structs of the unboxed state, its shardings). Allocates nothing."""
    boxed = jax.eval_shape(init_fn, jax.random.key(0))
    shardings = sharding.logical_shardings(boxed, mesh, rules)
    abstract = jax.tree.map(
        lambda x, s: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=s),
        strip_boxes(boxed),
        shardings,
    )
    return abstract, shardings


def init_state(init_fn, rng: jax.Array, shardings: TrainState) -> TrainState:
    """Initialises every parameter directly in its shard: no host copy of the model."""
    return jax.jit(lambda r: nn.unbox(init_fn(r)), out_shardings=shardings)(rng)


def count_params(params: Any) -> int:
    return int(sum(np.prod(x.shape) for x in jax.tree.leaves(params)))
