"""Memory/compute policies against the float32, no-remat path: remat policies (exact),
bfloat16 optimizer moments and bfloat16 parameters (within stated tolerances)."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from mmjax import optim, state
from mmjax.parallel import mesh as mesh_lib
from tests.helpers import assert_trees_close, host_batch, init_params, step_grads, tiny_config


def one_device(config):
    return mesh_lib.make_mesh(config.mesh, jax.devices()[:1])


@pytest.fixture(scope="module")
def reference():
    config = tiny_config()
    params = init_params(config)
    batch = host_batch(config)
    return config, params, batch, step_grads(config, one_device(config), params, batch)


@pytest.mark.parametrize("policy", ["full", "dots", "names:qkv,mlp_hidden"])
def test_remat_policy_gives_the_no_remat_gradient(reference, policy):
    """Recomputing is the same arithmetic: equal to float32 rounding (rtol 1e-5)."""
    _, params, batch, ((loss, _), grads) = reference
    c = tiny_config(**{"model.remat": policy})
    (loss_r, _), grads_r = step_grads(c, one_device(c), params, batch)
    np.testing.assert_allclose(loss_r, loss, rtol=1e-6)
    assert_trees_close(grads_r, grads, rtol=1e-5)


def test_unknown_checkpoint_name_fails():
    from mmjax.models import layers

    with pytest.raises(ValueError, match="unknown names"):
        layers.remat_policy("names:qkv,attn")


def adam_updates(config, grads_seq, params):
    tx, _ = optim.make_optimizer(config)
    opt = tx.init(params)
    out = []
    for g in grads_seq:
        u, opt = jax.jit(tx.update)(g, opt, params)
        params = optax.apply_updates(params, u)
        out.append(u)
    return out, opt


def test_bfloat16_moments_follow_float32_adam(reference):
    """Moments rounded to bf16 (8-bit mantissa) each step: the updates stay within 2% of
    the float32 optimizer's (of each leaf's largest entry) over 5 steps, and the state
    is bf16, half the bytes."""
    _, params, _, (_, grads) = reference
    rng = np.random.default_rng(0)
    seq = [jax.tree.map(lambda g: g * rng.uniform(0.5, 1.5), grads) for _ in range(5)]
    c32 = tiny_config(**{"schedule.warmup_steps": 0})
    c16 = tiny_config(**{"schedule.warmup_steps": 0, "optim.moment_dtype": "bfloat16"})
    u32, _ = adam_updates(c32, seq, params)
    u16, opt16 = adam_updates(c16, seq, params)
    for a, b in zip(u16, u32):
        assert_trees_close(a, b, rtol=2e-2)
    moments = [x for x in jax.tree.leaves(opt16) if x.ndim > 0]
    assert moments and all(x.dtype == jnp.bfloat16 for x in moments)


def test_bfloat16_moments_adam_equals_numpy_adam_float64():
    """Independent of optax: Adam (Kingma & Ba 2015, alg. 1) in float64 on one leaf."""
    c = tiny_config(
        **{"optim.moment_dtype": "bfloat16", "optim.grad_clip": 0.0, "optim.weight_decay": 0.0}
    )
    tx = optim.scale_by_adam_in(jnp.bfloat16, c.optim.b1, c.optim.b2, c.optim.eps)
    p = {"w": jnp.zeros(64)}
    s = tx.init(p)
    g = np.random.default_rng(1).normal(size=(3, 64))
    m = v = np.zeros(64)
    for t in range(1, 4):
        u, s = tx.update({"w": jnp.asarray(g[t - 1], jnp.float32)}, s)
        m = c.optim.b1 * m + (1 - c.optim.b1) * g[t - 1]
        v = c.optim.b2 * v + (1 - c.optim.b2) * g[t - 1] ** 2
        want = (m / (1 - c.optim.b1**t)) / (np.sqrt(v / (1 - c.optim.b2**t)) + c.optim.eps)
        np.testing.assert_allclose(u["w"], want, rtol=1e-2, atol=1e-2)


def test_bfloat16_parameters_step_close_to_float32(reference):
    """Parameters stored in bf16: the loss within 1e-2 relative and the gradients within
    5% (of each leaf's largest entry) of the float32 path; the temperatures stay float32."""
    _, params, batch, ((loss, _), grads) = reference
    c = tiny_config(**{"model.param_dtype": "bfloat16"})
    abstract = state.build(c, one_device(c)).abstract.params
    assert abstract["image"]["encoder"]["blocks"]["attn"]["qkv"]["kernel"].dtype == jnp.bfloat16
    assert abstract["objectives"]["image_text"]["t"].dtype == jnp.float32
    p16 = state.cast_params(params, jnp.bfloat16)
    (loss16, _), g16 = step_grads(c, one_device(c), p16, batch)
    np.testing.assert_allclose(loss16, loss, rtol=1e-2)
    assert_trees_close(jax.tree.map(lambda x: np.asarray(x, np.float32), g16), grads, rtol=5e-2)
