"""Exact gradient accumulation: k micro-batches give the gradient of the whole batch,
with negatives across all micro-batches, and need less memory."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from mmjax import losses, state
from mmjax.parallel import mesh as mesh_lib
from mmjax.train import accumulate, loop
from tests.helpers import assert_trees_close, init_params, step_grads, tiny_config


def test_split_and_merge_are_inverse_and_strided():
    x = jnp.arange(12)
    np.testing.assert_array_equal(
        accumulate.split(x, 3), [[0, 3, 6, 9], [1, 4, 7, 10], [2, 5, 8, 11]]
    )
    np.testing.assert_array_equal(accumulate.merge(accumulate.split(x, 3)), x)


def config_for(loss: str, **overrides):
    term = "objectives.image_text"
    return tiny_config(**{f"{term}.loss": loss, f"{term}.bias_init": -10.0, **overrides})


@pytest.mark.parametrize("loss", ["softmax", "sigmoid"])
def test_accumulated_gradient_equals_full_batch(loss):
    config = config_for(loss, batch_size=64)
    mesh = mesh_lib.make_mesh(config.mesh)
    rng = np.random.default_rng(0)
    batch = {
        "image": rng.integers(0, 256, (64, 16, 16, 3), dtype=np.uint8),
        "text": rng.integers(1, 127, (64, 12)).astype(np.int32),
    }
    params = init_params(config)
    (loss1, m1), g1 = step_grads(config, mesh, params, batch, accum_steps=1)
    (loss4, m4), g4 = step_grads(config, mesh, params, batch, accum_steps=4)
    np.testing.assert_allclose(loss4, loss1, rtol=1e-5)
    acc = "image_text/acc_image_to_text"
    np.testing.assert_allclose(m4[acc], m1[acc])
    assert_trees_close(g4, g1, rtol=1e-5)
    # A naive sum over micro-batches (negatives only within each) would differ.
    small = config_for(loss, batch_size=16)
    t = lambda g: g["objectives"]["image_text"]["t"]
    parts = [{k: v[j::4] for k, v in batch.items()} for j in range(4)]
    naive = sum(t(step_grads(small, mesh, params, part)[1]) for part in parts)
    assert not np.allclose(naive / 4, t(g1), rtol=1e-3)


def temp_bytes(config) -> int:
    mesh = mesh_lib.make_mesh(config.mesh)
    with jax.set_mesh(mesh):
        built = state.build(config, mesh)
        compiled = loop.compile_step(config, mesh, built, losses.Objective(config.objectives, mesh))
    return compiled.memory_analysis().temp_size_in_bytes


def test_accumulation_lowers_step_memory():
    big = dict(batch_size=512, **{"data.modalities.image.size": 32})
    full = temp_bytes(tiny_config(**big))
    accumulated = temp_bytes(tiny_config(accum_steps=4, **big))
    print(f"temp bytes per device: batch 512 {full}, 4 x 128 {accumulated}")
    assert accumulated < 0.6 * full
