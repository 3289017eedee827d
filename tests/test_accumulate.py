"""Exact gradient accumulation: k micro-batches give the gradient of the whole batch,
with negatives across all micro-batches, and need less memory."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from mmjax import losses, models
from mmjax.parallel import mesh as mesh_lib
from mmjax.parallel import sharding
from mmjax.train import accumulate, loop, state, step
from tests.helpers import tiny_config


def test_split_and_merge_are_inverse_and_strided():
    x = jnp.arange(12)
    np.testing.assert_array_equal(
        accumulate.split(x, 3), [[0, 3, 6, 9], [1, 4, 7, 10], [2, 5, 8, 11]]
    )
    np.testing.assert_array_equal(accumulate.merge(accumulate.split(x, 3)), x)


@functools.cache
def grad_fn(loss: str, accum_steps: int):
    config = tiny_config(**{"loss.name": loss, "model.bias_init": -10.0})
    mesh = mesh_lib.make_mesh(config.mesh)
    model = models.build_model(config.model)
    loss_fn = losses.sharded_loss(losses.get_loss(config.loss.name, config.loss), mesh)
    return mesh, jax.jit(step.make_grad_fn(model, loss_fn, accum_steps))


def grads(config, accum_steps, batch, params):
    mesh, fn = grad_fn(config.loss.name, accum_steps)
    with jax.set_mesh(mesh):
        return jax.device_get(fn(params, sharding.global_batch(batch, mesh)))


@pytest.mark.parametrize("loss", ["softmax", "sigmoid"])
def test_accumulated_gradient_equals_full_batch(loss):
    config = tiny_config(batch_size=64, **{"loss.name": loss, "model.bias_init": -10.0})
    rng = np.random.default_rng(0)
    batch = {
        "image": rng.integers(0, 256, (64, 16, 16, 3), dtype=np.uint8),
        "tokens": rng.integers(1, 127, (64, 12)).astype(np.int32),
    }
    model = models.build_model(config.model)
    params = jax.jit(model.init)(jax.random.key(0), *state.dummy_inputs(16, 12))["params"]
    params = jax.device_get(state.strip_boxes(params))
    (loss1, m1), g1 = grads(config, 1, batch, params)
    (loss4, m4), g4 = grads(config, 4, batch, params)
    np.testing.assert_allclose(loss4, loss1, rtol=1e-5)
    np.testing.assert_allclose(m4["acc_x2y"], m1["acc_x2y"])
    for (path, a), b in zip(jax.tree_util.tree_leaves_with_path(g1), jax.tree.leaves(g4)):
        scale = np.abs(a).max() + 1e-12
        np.testing.assert_allclose(b / scale, a / scale, rtol=1e-5, atol=1e-5, err_msg=str(path))
    # A naive sum over micro-batches (negatives only within each) would differ.
    naive = sum(
        grads(config, 1, {k: v[j::4] for k, v in batch.items()}, params)[1]["t"] for j in range(4)
    )
    assert not np.allclose(naive / 4, g1["t"], rtol=1e-3)


def temp_bytes(config) -> int:
    mesh = mesh_lib.make_mesh(config.mesh)
    with jax.set_mesh(mesh):
        model, tx, schedule, _, abstract, shardings = loop.build_model_and_state(config, mesh)
        compiled = loop.compile_step(config, mesh, model, tx, schedule, abstract, shardings)
    return compiled.memory_analysis().temp_size_in_bytes


def test_accumulation_lowers_step_memory():
    big = dict(batch_size=512, **{"data.image_size": 32})
    full = temp_bytes(tiny_config(**big))
    accumulated = temp_bytes(tiny_config(accum_steps=4, **big))
    print(f"temp bytes per device: batch 512 {full}, 4 x 128 {accumulated}")
    assert accumulated < 0.6 * full
