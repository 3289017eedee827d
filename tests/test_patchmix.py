"""PatchMix: patch-level mixing of several images of the global batch, and `soft_matrix`
(InfoNCE against the mixing proportions) against float64 NumPy, on 1 and 8 devices, and
exact under gradient accumulation.

soft_matrix: L = s X Y^T, T [B, B] rows summing to 1, m_j = sum_i T_ij;
loss = 1/2B [sum_i (lse_j L_ij - sum_j T_ij L_ij) + sum_j (m_j lse_i L_ij - sum_i T_ij L_ij)];
dL/dL_ij = 1/2B [P_ij - T_ij + m_j Q_ij - T_ij], P the row softmax, Q the column softmax.
"""

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import NamedSharding, PartitionSpec

from mmjax import config as config_lib
from mmjax import losses, state
from mmjax.data import patchmix
from mmjax.losses import get_loss, sharded_loss
from mmjax.parallel import sharding
from mmjax.parallel.mesh import BATCH_AXES
from mmjax.train import step as step_lib
from tests.helpers import assert_trees_close, host_batch, init_params, tiny_config
from tests.test_losses import _logsumexp, _mesh, make_batch
from tests.test_train_step import on_mesh


def np_soft_matrix(x, y, s, t):
    x, y, t = (a.astype(np.float64) for a in (x, y, t))
    n = len(x)
    logits = s * x @ y.T
    lse_r, lse_c = _logsumexp(logits, 1), _logsumexp(logits.T, 1)
    m = t.sum(0)
    loss = ((lse_r - (t * logits).sum(1)).sum() + (m * lse_c - (t * logits).sum(0)).sum()) / (2 * n)
    p, q = np.exp(logits - lse_r[:, None]), np.exp(logits - lse_c[None, :])
    g = (p - t + m[None, :] * q - t) / (2 * n)
    return loss, s * g @ y, s * g.T @ x, (g * (x @ y.T)).sum()


def np_mix(images, source, p):
    """Mixed images and targets by loops over examples and patches."""
    b, _, w, _ = images.shape
    mixed, gw = np.zeros_like(images), w // p
    for i in range(b):
        for n, j in enumerate(source[i]):
            r, c = (n // gw) * p, (n % gw) * p
            mixed[i, r : r + p, c : c + p] = images[j, r : r + p, c : c + p]
    targets = np.zeros((b, b))
    for i in range(b):
        for j in source[i]:
            targets[i, j] += 1 / source.shape[1]
    return mixed, targets


def test_mix_takes_each_patch_from_one_of_its_parts():
    images = np.random.default_rng(0).integers(0, 256, (16, 8, 12, 3), dtype=np.uint8)
    keys = step_lib.example_keys(0, 3, 16)
    source = np.asarray(jax.jit(patchmix.draw, static_argnums=(1, 2, 3))(keys, 6, 3, 1.0))
    for i in range(16):  # itself plus at most 2 partners
        assert len(set(source[i]) - {i}) <= 2
    assert (source != np.arange(16)[:, None]).any()  # partners do occur
    mixed, targets = jax.jit(patchmix.mix, static_argnums=2)(images, source, 4)
    want_mixed, want_targets = np_mix(images, source, 4)
    np.testing.assert_array_equal(mixed, want_mixed)
    np.testing.assert_allclose(targets, want_targets, atol=1e-6)


def test_soft_matrix_matches_numpy_on_8_devices():
    """(1 = 8 devices: the step test below.)"""
    x, y, s, _ = make_batch("typical", n=32)
    rng = np.random.default_rng(2)
    t = rng.dirichlet(np.ones(32) * 0.3, size=32).astype(np.float32)
    t[:, 5] = 0.0  # an example no mix took: no y->x term for it
    t /= t.sum(1, keepdims=True)
    mesh = _mesh(8)
    fn = sharded_loss(get_loss("soft_matrix"), mesh)
    put = lambda a: jax.device_put(a, NamedSharding(mesh, PartitionSpec(BATCH_AXES)))
    grad = jax.value_and_grad(lambda a, b, c, tt: fn(a, b, c, 0.0, x_targets=tt)[0], (0, 1, 2))
    got, (dx, dy, ds) = jax.jit(grad)(put(x), put(y), jnp.float32(s), put(t))
    want = np_soft_matrix(x, y, s, t)
    np.testing.assert_allclose(got, want[0], rtol=1e-5)
    for g, w in zip((dx, dy, ds), want[1:]):
        np.testing.assert_allclose(g, w, rtol=1e-5, atol=1e-5 * np.abs(w).max())


def patchmix_config(accum_steps: int = 1):
    c = tiny_config(accum_steps=accum_steps)
    with c.unlocked():
        c.model.towers.mix = config_lib.tower("vit", share="image")
        c.patchmix.mix = config_lib.patchmix(source="image", parts=3, patch_size=8)
        c.objectives.patchmix = config_lib.objective("soft_matrix", ("mix", "text"), weight=0.5)
    return c


def mixed_grads(config, mesh, params, batch, accum_steps):
    with jax.set_mesh(mesh):
        model = state.build(config, mesh).model
        objective = losses.Objective(config.objectives, mesh)
        grad_fn = step_lib.make_grad_fn(model, objective, accum_steps)
        fn = jax.jit(patchmix.mixing(grad_fn, config.patchmix))
        keys = step_lib.example_keys(config.seed, 0, config.batch_size)
        return jax.device_get(fn(params, sharding.global_batch(batch, mesh), keys))


def test_patchmix_step_8_devices_and_accumulation_equal_1():
    c = patchmix_config()
    params, batch = init_params(c), host_batch(c)
    assert "mix" not in params and "mix" not in batch  # mixed in the step, one tower
    one = mixed_grads(c, on_mesh(c, (1, 1, 1)), params, batch, 1)
    eight = mixed_grads(c, on_mesh(c, (8, 1, 1)), params, batch, 2)
    np.testing.assert_allclose(eight[0][0], one[0][0], rtol=1e-5)
    assert_trees_close(eight[1], one[1], rtol=1e-4)
    total = one[0][1]["image_text/loss"] + 0.5 * one[0][1]["patchmix/loss"]
    np.testing.assert_allclose(one[0][0], total, rtol=1e-6)
    assert np.abs(one[1]["objectives"]["patchmix"]["t"]) > 0
