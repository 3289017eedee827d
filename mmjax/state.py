"""The train state, its shardings, and its initialisation directly onto the mesh.

Below the train loop and the evaluators alike: building a model and its state from a
config is what training, evaluation, export and import all need.
"""

import dataclasses
import logging
from typing import Any

import flax.linen as nn
import flax.struct
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
from jax.sharding import Mesh

from mmjax import optim, storage
from mmjax import params as params_lib
from mmjax.data.modalities import example_specs
from mmjax.models import Model, build_model
from mmjax.models.model import OBJECTIVES_KEY
from mmjax.parallel import sharding


class TrainState(flax.struct.PyTreeNode):
    """Everything that changes during training; plain pytrees, float32.

    `skipped` counts steps whose loss or gradient was not finite (their update was
    dropped); `skipped_in_a_row` counts the current run of them. `opt_state` covers the
    trainable parameters only (frozen ones are `optax.MaskedNode`s there), and so does
    `ema`, the moving average of the parameters (None unless `config.ema.decay` > 0).
    `queues`: {term: {"rows": [Q, d] sharded over the batch axes, "pointer": the next row
    to write, "filled": rows written so far, up to Q}} for objective terms with a queue of
    past embeddings (train/queue.py), or None.
    """

    step: jax.Array
    params: Any
    opt_state: Any
    skipped: jax.Array
    skipped_in_a_row: jax.Array
    ema: Any = None
    queues: Any = None


def queue_sizes(config: ml_collections.ConfigDict) -> dict[str, tuple[int, int]]:
    """{term: (Q, d)} of the objective terms with a queue (`queue_size` > 0)."""
    d = config.model.embed_dim
    sizes = {n: int(t.get("queue_size", 0)) for n, t in config.objectives.items()}
    return {n: (q, d) for n, q in sizes.items() if q > 0}


def empty_queues(sizes: dict[str, tuple[int, int]]) -> dict | None:
    """Zero queues, nothing filled; rows carry the logical axes ("batch", "joint")."""
    if not sizes:
        return None
    rows = lambda shape: nn.LogicallyPartitioned(jnp.zeros(shape, jnp.float32), ("batch", "joint"))
    zero = lambda: jnp.zeros((), jnp.int32)
    return {
        n: {"rows": rows(shape), "pointer": zero(), "filled": zero()} for n, shape in sizes.items()
    }


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


def fresh_state(
    params: Any,
    tx: optax.GradientTransformation,
    frozen: tuple[str, ...] = (),
    ema: bool = False,
    queues: dict[str, tuple[int, int]] | None = None,
) -> TrainState:
    """The state a run starts from with `params`: step 0, fresh optimizer moments for the
    trainable parameters (none for those matching `frozen`), the EMA equal to them (in
    float32 whatever `param_dtype`: a bfloat16 average would not move at decay 0.9999)."""
    trainable = params_lib.trainable(params, frozen)
    zero = jnp.zeros((), jnp.int32)
    return TrainState(
        step=zero,
        params=params,
        opt_state=tx.init(trainable),
        skipped=zero,
        skipped_in_a_row=zero,
        ema=jax.tree.map(lambda p: p.astype(jnp.float32), trainable) if ema else None,
        queues=empty_queues(queues or {}),
    )


def make_init_fn(
    model: nn.Module,
    tx: optax.GradientTransformation,
    inputs: dict,
    frozen: tuple[str, ...] = (),
    ema: bool = False,
    param_dtype: Any = "float32",
    queues: dict[str, tuple[int, int]] | None = None,
):
    """rng -> boxed TrainState (params still carry their logical axis names)."""

    def init(rng: jax.Array) -> TrainState:
        params = cast_params(model.init(rng, inputs)["params"], param_dtype)
        return fresh_state(params, tx, frozen, ema, queues)

    return init


def ema_model(ema: Any, params: Any) -> Any:
    """`params` with the EMA in place of every trainable leaf. Frozen leaves (not
    averaged) are the parameters' own; every leaf has the parameters' dtype (the EMA
    itself is float32)."""
    merged = params_lib.merge(ema, params)
    return jax.tree.map(lambda m, p: m.astype(p.dtype), merged, params)


def ema_params(state: TrainState) -> Any:
    """The EMA model's parameters (`ema_model`), or None without an EMA."""
    return None if state.ema is None else ema_model(state.ema, state.params)


def uses_ema(config: ml_collections.ConfigDict) -> bool:
    return float(config.get("ema", {}).get("decay", 0.0)) > 0


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
    frozen: tuple[str, ...] = ()  # regexes of the parameters that do not train


def build(config: ml_collections.ConfigDict, mesh: Mesh) -> Built:
    """Everything needed to initialise, restore or step the run of `config` on `mesh`."""
    model = build_model(config.model, config.objectives)
    tx, schedule = optim.make_optimizer(config)
    frozen = params_lib.frozen_patterns(config)
    inputs = dummy_inputs(example_specs(config))
    param_dtype = config.model.get("param_dtype", "float32")
    init_fn = make_init_fn(
        model, tx, inputs, frozen, uses_ema(config), param_dtype, queue_sizes(config)
    )
    abstract, shardings = abstract_state(init_fn, mesh, config.mesh.rules)
    return Built(model, tx, schedule, init_fn, abstract, shardings, frozen)


def init_from(config: ml_collections.ConfigDict, built: Built, state: TrainState) -> TrainState:
    """A fresh run's state with some parameters taken from another run's checkpoint.

    `config.init.workdir` names the run, `config.init.step` its step (0: the latest) and
    `config.init.params` regexes of the parameters to take (empty: all), e.g.
    ("^image/",) for LiT's pre-trained image tower. Only those are read; the optimizer
    moments start afresh and the EMA from the resulting parameters.
    """
    c = config.get("init")
    if not c or not c.workdir:
        return state
    from mmjax.checkpoint import Checkpointer  # below the loop, above the models: import late

    take = params_lib.matches(c.params) if c.params else (lambda _: True)
    wanted = params_lib.select(built.abstract.params, take)
    if not wanted:
        raise ValueError(f"config.init.params={tuple(c.params)} matches no parameter.")
    ckpts = Checkpointer(storage.join(c.workdir, "checkpoints"), read_only=True)
    step = c.step or ckpts.latest_step()
    if step is None:
        raise FileNotFoundError(f"config.init.workdir: no checkpoint in {ckpts.directory}.")
    loaded = ckpts.restore_params(step, wanted)
    ckpts.close()
    count = count_params(loaded)
    logging.info("Initialised %d parameters from %s step %d.", count, c.workdir, step)
    params = params_lib.replace(state.params, loaded)
    fresh = lambda p: fresh_state(p, built.tx, built.frozen, uses_ema(config), queue_sizes(config))
    return jax.jit(lambda p: nn.unbox(fresh(p)), out_shardings=built.shardings)(params)
