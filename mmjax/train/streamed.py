"""Streamed exact accumulation: a global batch larger than the devices can hold at once.

The one-jit step (step.py, with `accum_steps`) takes the whole global batch as an
argument, so the image batch alone bounds it (a 16M-example batch of 224 px uint8 images
is 2.4 TB). Here the host feeds the step one micro-batch at a time, twice, and only the
tower outputs and their gradients are kept for the whole batch, on the devices:

  1. embed: per micro-batch, one jitted call writes its outputs into device-resident
     [B, ...] buffers (donated, updated in place), in the rows of the full batch;
  2. loss: one call computes the objective over the whole batch, its gradient at every
     output and the logit parameters' gradient (ring losses keep this linear in B);
  3. backward: per micro-batch again, one call pulls its rows of the output gradients
     back to the parameters under `jax.vjp`, added to a donated gradient accumulator;
  4. update: the optimizer step of the one-jit path (`step.make_apply_grads`).

Exact: micro-batch j holds, on every batch shard d, rows d*L + j*m ... + m - 1 of the full
batch (L rows per shard, m = L / accum_steps), and its examples' PRNG keys are those of
`step.example_keys` for those rows, so the loss, gradients and masks are those of the
one-jit step on the batch assembled from the micro-batches (`assemble`). Each part is
compiled on its own; its memory is what bounds the batch (`memory_report`).
"""

import dataclasses
import math
import time
from collections.abc import Callable, Iterable
from typing import Any

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from mmjax import state as state_lib
from mmjax.data import modalities
from mmjax.losses.objectives import Objective
from mmjax.parallel import sharding
from mmjax.parallel.mesh import BATCH_AXES
from mmjax.state import TrainState
from mmjax.train import accumulate, freeze, step, token_drop

ROWS = PartitionSpec(BATCH_AXES)


def batch_shards(mesh: Mesh) -> int:
    return math.prod(mesh.shape[a] for a in BATCH_AXES)


def assemble(micro_batches: list[dict], shards: int) -> dict:
    """The full batch (host arrays) whose micro-batch j is `micro_batches[j]`: on each of
    the `shards` batch shards, micro-batch j is the j-th block of that shard's rows."""

    def stack(*parts):
        k, m = len(parts), len(parts[0]) // shards
        split = [p.reshape(shards, m, *p.shape[1:]) for p in parts]
        return np.stack(split, axis=1).reshape(shards * k * m, *parts[0].shape[1:])

    return jax.tree.map(stack, *micro_batches)


@dataclasses.dataclass(frozen=True)
class Parts:
    """The four jitted parts of a streamed step (see the module doc)."""

    init: Callable  # () -> output buffers (zeros)
    embed: Callable  # (params, micro inputs, step, j, buffers) -> buffers
    loss: Callable  # (params, buffers, extras) -> (loss, metrics, output grads, grads)
    backward: Callable  # (params, micro inputs, step, j, output grads, grads) -> grads
    update: Callable  # (state, loss, metrics, grads) -> (state, metrics)
    buffer_spec: Any  # ShapeDtypeStructs of the output buffers


def micro_spec(config: ml_collections.ConfigDict, mesh: Mesh, objective: Objective) -> dict:
    """The tower inputs of one micro-batch: global shapes, sharded over the batch axes."""
    rows = NamedSharding(mesh, ROWS)
    micro = config.batch_size // config.accum_steps
    return {
        name: jax.ShapeDtypeStruct((micro, *shape), dtype, sharding=rows)
        for name, (shape, dtype) in modalities.example_specs(config).items()
        if name in objective.modalities
    }


def make_parts(
    built: state_lib.Built,
    objective: Objective,
    config: ml_collections.ConfigDict,
    mesh: Mesh,
) -> Parts:
    """The parts for `config` (batch_size, accum_steps) on `mesh`."""
    state_shardings = built.shardings
    shards, k, batch = batch_shards(mesh), config.accum_steps, config.batch_size
    per_shard = batch // shards
    m = per_shard // k
    if len(token_drop.phase_starts(config)) > 1 or objective.ema_teacher_modalities:
        raise ValueError(
            "Streamed accumulation supports neither token_drop_until nor teacher='ema':"
            " use accum_streamed=False (the one-jit step has both)."
        )
    if objective.queue_terms:
        raise ValueError(
            "Streamed accumulation does not support queue_size > 0: use accum_streamed=False."
        )
    if config.get("patchmix"):
        raise ValueError(
            "Streamed accumulation never holds the global batch that PatchMix mixes within:"
            " use accum_streamed=False (the one-jit step mixes it exactly)."
        )
    # Locked towers and frozen parameters: no backward pass through them (train/freeze.py).
    forward = step.make_forward(freeze.stop_frozen(built.model, built.frozen), objective)
    logits_fn = step.make_logits(built.model)
    rows = NamedSharding(mesh, ROWS)
    replicated = sharding.replicated(mesh)
    params_shardings = state_shardings.params

    def keys_of(step_index: jax.Array, j: jax.Array) -> jax.Array:
        """`step.example_keys` of micro-batch j's rows of the full batch."""
        step_key = jax.random.fold_in(jax.random.key(config.seed), step_index)
        index = jnp.arange(shards)[:, None] * per_shard + j * m + jnp.arange(m)[None, :]
        keys = jax.vmap(lambda i: jax.random.fold_in(step_key, i))(index.reshape(-1))
        return jax.lax.with_sharding_constraint(keys, rows)

    def on_rows(fn, n_rows_args: int):
        """`fn` per batch shard, on its local rows; trailing args replicated."""
        specs = (ROWS,) * n_rows_args + (PartitionSpec(),)
        return jax.shard_map(fn, mesh=mesh, in_specs=specs, out_specs=ROWS)

    write = on_rows(lambda b, x, j: jax.lax.dynamic_update_slice_in_dim(b, x, j * m, 0), 2)
    read = on_rows(lambda b, j: jax.lax.dynamic_slice_in_dim(b, j * m, m, 0), 1)

    out_spec = jax.eval_shape(
        lambda p, x: forward(p, x, keys_of(jnp.int32(0), jnp.int32(0))),
        built.abstract.params,
        micro_spec(config, mesh, objective),
    )
    buffer_spec = jax.tree.map(
        lambda s: jax.ShapeDtypeStruct((batch, *s.shape[1:]), s.dtype, sharding=rows), out_spec
    )

    def init():
        return jax.tree.map(lambda s: jnp.zeros(s.shape, s.dtype), buffer_spec)

    def embed(params, inputs, step_index, j, buffers):
        out = forward(params, inputs, keys_of(step_index, j))
        return jax.tree.map(lambda b, x: write(b, x, j), buffers, out)

    def loss(params, buffers, extras):
        diff, rest = accumulate.partition(buffers)
        logits, pull_logits = jax.vjp(logits_fn, params)
        (value, metrics), (g_out, g_logits) = jax.value_and_grad(
            lambda d, lg: objective(accumulate.combine(d, rest), lg, extras),
            argnums=(0, 1),
            has_aux=True,
        )(diff, logits)
        (grads,) = pull_logits(g_logits)
        return value, metrics, g_out, grads

    def backward(params, inputs, step_index, j, g_out, grads):
        keys = keys_of(step_index, j)
        _, pull = jax.vjp(lambda p: accumulate.partition(forward(p, inputs, keys))[0], params)
        g_micro = jax.tree.map(lambda g: None if g is None else read(g, j), g_out)
        (g_params,) = pull(g_micro)
        return jax.tree.map(jnp.add, grads, g_params)

    buffer_shardings = jax.tree.map(lambda _: rows, buffer_spec)
    diff_shardings = jax.tree.map(lambda _: rows, accumulate.partition(buffer_spec)[0])
    apply = step.make_apply_grads(built.tx, built.schedule, config)
    return Parts(
        init=jax.jit(init, out_shardings=buffer_shardings),
        embed=jax.jit(embed, out_shardings=buffer_shardings, donate_argnums=4),
        loss=jax.jit(  # the output gradients take the outputs' place (donated)
            loss,
            out_shardings=(replicated, replicated, diff_shardings, params_shardings),
            donate_argnums=1,
        ),
        backward=jax.jit(backward, out_shardings=params_shardings, donate_argnums=5),
        update=jax.jit(apply, out_shardings=(state_shardings, replicated), donate_argnums=(0, 3)),
        buffer_spec=buffer_spec,
    )


class StreamedStep:
    """`step(state, micro_batches) -> (state, metrics)`: `micro_batches()` yields the
    step's `accum_steps` host micro-batches {name: array} in order, and is called twice
    (once per pass): a data iterator rewound to the step's start, say."""

    def __init__(self, parts: Parts, objective: Objective, mesh: Mesh, accum_steps: int):
        self.parts, self.objective, self.mesh, self.k = parts, objective, mesh, accum_steps

    def _inputs(self, micro: dict) -> dict:
        inputs, _ = step.split_batch(micro, self.objective)
        return sharding.global_batch(inputs, self.mesh)

    def __call__(self, state: TrainState, micro_batches: Callable[[], Iterable[dict]]):
        p = self.parts
        buffers, extras = p.init(), []
        for j, micro in enumerate(micro_batches()):
            buffers = p.embed(state.params, self._inputs(micro), state.step, jnp.int32(j), buffers)
            extras.append(step.split_batch(micro, self.objective)[1])
        if len(extras) != self.k:
            raise ValueError(f"{len(extras)} micro-batches for accum_steps={self.k}.")
        local_shards = batch_shards(self.mesh) // jax.process_count()
        full_extras = sharding.global_batch(assemble(extras, local_shards), self.mesh)
        loss, metrics, g_out, grads = p.loss(state.params, buffers, full_extras)
        del buffers
        for j, micro in enumerate(micro_batches()):
            grads = p.backward(
                state.params, self._inputs(micro), state.step, jnp.int32(j), g_out, grads
            )
        return p.update(state, loss, metrics, grads)


class StreamedRunner:
    """The loop's streamed step: `runner(state) -> (state, metrics)` reads the step's
    `accum_steps` micro-batches from `data` (a data iterator of micro-batches), then
    rewinds `data` to the step's start and reads them again for the backward pass. After
    a step `data` stands after its last micro-batch, so checkpointing `data` resumes
    exactly; `wait_s` is the time the step spent waiting for input."""

    def __init__(self, step_fn: StreamedStep, data, accum_steps: int):
        self.step, self.data, self.k = step_fn, data, accum_steps
        self.wait_s = 0.0

    def __call__(self, state: TrainState):
        start, passes = self.data.get_state(), [0]
        self.wait_s = 0.0

        def micro_batches():
            if passes[0]:
                self.data.set_state(start)
            passes[0] += 1
            for _ in range(self.k):
                t = time.perf_counter()
                batch = next(self.data)
                self.wait_s += time.perf_counter() - t
                yield batch

        return self.step(state, micro_batches)


def micro_config(config: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
    """`config` with the batch of one micro-batch: what the data pipeline reads."""
    c = ml_collections.ConfigDict(config.to_dict())
    c.batch_size = config.batch_size // config.accum_steps
    return c


def runner(built, objective: Objective, config, mesh: Mesh, data) -> StreamedRunner:
    """The streamed step of `config` over `data` (micro-batches, `micro_config`)."""
    parts = make_parts(built, objective, config, mesh)
    return StreamedRunner(
        StreamedStep(parts, objective, mesh, config.accum_steps), data, config.accum_steps
    )


def memory_report(parts: Parts, abstract_state: TrainState, micro: dict, extras: dict) -> dict:
    """Per-device bytes of each compiled part (arguments, outputs, temporaries, aliased),
    and the step's peak: the largest part plus what lives beside it, not among its
    arguments (the optimizer state; the next micro-batch of input, in flight)."""
    i32 = jax.ShapeDtypeStruct((), jnp.int32)
    params = abstract_state.params
    diff = accumulate.partition(parts.buffer_spec)[0]
    grads = params
    lowered = {
        "embed": parts.embed.lower(params, micro, i32, i32, parts.buffer_spec),
        "loss": parts.loss.lower(params, parts.buffer_spec, extras),
        "backward": parts.backward.lower(params, micro, i32, i32, diff, grads),
        "update": parts.update.lower(
            abstract_state, jax.ShapeDtypeStruct((), jnp.float32), {}, grads
        ),
    }
    per_device = lambda tree: sum(_shard_bytes(x) for x in jax.tree.leaves(tree))
    beside = {
        "embed": per_device(abstract_state.opt_state) + per_device(micro),
        "loss": per_device(abstract_state.opt_state),
        "backward": per_device(abstract_state.opt_state) + per_device(micro),
        "update": 0,
    }
    report = {}
    for name, low in lowered.items():
        a = low.compile().memory_analysis()
        needed = (
            a.argument_size_in_bytes
            + a.output_size_in_bytes
            + a.temp_size_in_bytes
            - a.alias_size_in_bytes
        )
        report[name] = dict(
            arguments=a.argument_size_in_bytes,
            outputs=a.output_size_in_bytes,
            temporaries=a.temp_size_in_bytes,
            aliased=a.alias_size_in_bytes,
            needed=needed,
            beside=beside[name],
            total=needed + beside[name],
        )
    report["peak"] = max(r["total"] for r in report.values())
    report["buffers"] = per_device(parts.buffer_spec)
    return report


def _shard_bytes(x: jax.ShapeDtypeStruct) -> int:
    """Bytes of one device's shard of `x`."""
    s = getattr(x, "sharding", None)
    shape = s.shard_shape(x.shape) if s is not None else x.shape
    return math.prod(shape) * jnp.dtype(x.dtype).itemsize
