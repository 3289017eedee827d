"""Running the real compiled train step for a few steps on random batches."""

import flax.linen as nn
import jax
import numpy as np

from mmjax import losses, state
from mmjax.parallel import mesh as mesh_lib
from mmjax.parallel import sharding
from mmjax.train import loop


def random_batch(config, index: int) -> dict:
    """A random image-text batch of the config's shapes (a new one per `index`)."""
    rng = np.random.default_rng(index)
    size, n = config.data.modalities.image.size, config.batch_size
    text = config.model.towers.text
    return {
        "image": rng.integers(0, 256, (n, size, size, 3), dtype=np.uint8),
        "text": rng.integers(1, text.vocab_size - 1, (n, text.context_length)).astype(np.int32),
    }


def compiled_step(config):
    """(mesh, built, the AOT-compiled train step) of `config` on all devices."""
    mesh = mesh_lib.make_mesh(config.mesh)
    with jax.set_mesh(mesh), nn.logical_axis_rules(sharding.as_rules(config.mesh.rules)):
        built = state.build(config, mesh)
        objective = losses.Objective(config.objectives, mesh)
        return mesh, built, loop.compile_step(config, mesh, built, objective)


def train_run(config, steps: int, compiled=None) -> tuple[list[state.TrainState], list[dict]]:
    """(the state after 0, 1, ..., `steps` steps, each step's metrics), on the host.

    `compiled`: `compiled_step(config)`'s result, when a test has it already.
    """
    mesh, built, compiled = compiled or compiled_step(config)
    with jax.set_mesh(mesh):
        s = state.init_state(built.init_fn, jax.random.key(config.seed), built.shardings)
        states, metrics = [jax.device_get(s)], []
        for i in range(steps):
            s, m = compiled(s, sharding.global_batch(random_batch(config, i), mesh))
            states.append(jax.device_get(s))
            metrics.append(jax.device_get(m))
    return states, metrics


def train_states(config, steps: int, compiled=None) -> list[state.TrainState]:
    return train_run(config, steps, compiled)[0]


def tree_bytes(tree, floats: bool = False) -> int:
    """Bytes of every array leaf of `tree` (only the floating-point ones with `floats`)."""
    leaves = [np.asarray(x) for x in jax.tree.leaves(tree)]
    return int(sum(x.nbytes for x in leaves if not floats or np.issubdtype(x.dtype, np.floating)))
