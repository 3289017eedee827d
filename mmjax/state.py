"""The train state, its shardings, and its initialisation directly onto the mesh.

Below the train loop and the evaluators alike: building a model and its state from a
config is what training, evaluation, export and import all need.
"""

import dataclasses
from typing import Any

import flax.linen as nn
import flax.struct
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
from jax.sharding import Mesh

from mmjax import optim
from mmjax.data.modalities import example_specs
from mmjax.models import Model, build_model
from mmjax.models.model import OBJECTIVES_KEY
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


def dummy_inputs(specs: dict[str, tuple[tuple[int, ...], Any]], batch: int = 1) -> dict:
    """Zeros of every modality's example shape (`modalities.example_specs`), batch `batch`."""
    return {name: jnp.zeros((batch, *shape), dtype) for name, (shape, dtype) in specs.items()}


def cast_params(params: dict, dtype) -> dict:
    """Tower parameters in `dtype` (config.model.param_dtype); the objective terms' scales
    and biases stay float32 (a bfloat16 log-scale would not move at usual learning rates)."""
    dtype = jnp.dtype(dtype)
    if dtype == jnp.float32:
        return params
    cast = lambda x: x.astype(dtype) if jnp.issubdtype(x.dtype, jnp.floating) else x
    return {k: v if k == OBJECTIVES_KEY else jax.tree.map(cast, v) for k, v in params.items()}


def make_init_fn(
    model: nn.Module, tx: optax.GradientTransformation, inputs: dict, param_dtype="float32"
):
    """rng -> boxed TrainState (params still carry their logical axis names)."""

    def init(rng: jax.Array) -> TrainState:
        params = cast_params(model.init(rng, inputs)["params"], param_dtype)
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


@dataclasses.dataclass(frozen=True)
class Built:
    """A run's model, optimizer, schedule, init function, abstract state and shardings."""

    model: Model
    tx: optax.GradientTransformation
    schedule: optax.Schedule
    init_fn: Any
    abstract: TrainState  # ShapeDtypeStructs with shardings: allocates nothing
    shardings: TrainState


def build(config: ml_collections.ConfigDict, mesh: Mesh) -> Built:
    """Everything needed to initialise, restore or step the run of `config` on `mesh`."""
    model = build_model(config.model, config.objectives)
    tx, schedule = optim.make_optimizer(config)
    inputs = dummy_inputs(example_specs(config))
    init_fn = make_init_fn(model, tx, inputs, config.model.get("param_dtype", "float32"))
    abstract, shardings = abstract_state(init_fn, mesh, config.mesh.rules)
    return Built(model, tx, schedule, init_fn, abstract, shardings)
