"""Token dropping (FLIP patch dropout; text tokens alike): which tokens an example keeps,
that they come from its own key, that GradCache stays exact with them, the unmasked-tuning
phase switch, and a bitwise resume across it."""

import jax
import jax.numpy as jnp
import numpy as np
import orbax.checkpoint as ocp
import pytest

from mmjax import losses, state
from mmjax.checkpoint import Checkpointer
from mmjax.models.tower import TOKEN_DROP_SALT, Tokens, drop_tokens, kept_tokens
from mmjax.parallel import mesh as mesh_lib
from mmjax.parallel import sharding
from mmjax.train import step as step_lib
from mmjax.train import token_drop
from tests.helpers import assert_trees_close, init_params, step_grads, tiny_config
from tests.train_helpers import compiled_step
from tests.train_helpers import random_batch as config_batch


def test_kept_tokens_counts():
    assert kept_tokens(196, 0, 0.5) == 98 and kept_tokens(196, 0, 0.75) == 49
    assert kept_tokens(197, 1, 0.5) == 1 + 98  # ViT-B/16 with its class token
    assert kept_tokens(4, 1, 0.9) == 2  # always at least one token besides the forced


def test_drop_tokens_keeps_forced_tokens_in_order_and_drops_padding_first():
    b, n, w = 3, 10, 2
    x = jnp.broadcast_to(jnp.arange(n, dtype=jnp.float32)[None, :, None], (b, n, w))
    mask = jnp.arange(n)[None, :] < jnp.array([[8], [5], [3]])  # 2, 5, 7 padding tokens
    pool = jnp.array([7, 4, 2])  # the last real token (EOT)
    keys = jax.random.split(jax.random.key(0), b)
    out = drop_tokens(Tokens(x, mask, True, pool), keys, 0.5, keep_first=True)
    kept = np.asarray(out.x[..., 0]).astype(int)
    # Numpy re-derivation from the same noise: forced first (class token, pooled token),
    # then real tokens by increasing noise, padding last; kept ones in their old order.
    for i in range(b):
        noise = np.asarray(jax.random.uniform(jax.random.fold_in(keys[i], TOKEN_DROP_SALT), (n,)))
        order = sorted(
            range(n),
            key=lambda j: -1.0 if j in (0, int(pool[i])) else noise[j] + (not mask[i, j]),
        )
        want = sorted(order[: 2 + round(0.5 * 8)])
        np.testing.assert_array_equal(kept[i], want)
        assert kept[i][0] == 0 and int(pool[i]) in kept[i]
        assert kept[i][int(out.pool_index[i])] == int(pool[i])
        np.testing.assert_array_equal(out.mask[i], np.asarray(mask[i])[want])
    # Example 2 has 3 real tokens and 7 padding: all real ones survive, padding goes first.
    assert set(kept[2]) >= {0, 1, 2}


def config_with_drop(ratio: float, **overrides):
    return tiny_config(
        **{
            "data.modalities.image.size": 32,  # 16 patches + the class token
            "model.towers.image.token_drop": ratio,
            "model.towers.text.token_drop": ratio,
            **overrides,
        }
    )


def random_batch(n: int) -> dict:
    rng = np.random.default_rng(0)
    return {
        "image": rng.integers(0, 256, (n, 32, 32, 3), dtype=np.uint8),
        "text": rng.integers(1, 127, (n, 12)).astype(np.int32),
    }


def test_each_example_drops_by_its_own_key_and_evaluation_sees_every_token():
    config = config_with_drop(0.5)
    model = state.build(config, mesh_lib.make_mesh(config.mesh, jax.devices()[:1])).model
    params, batch = init_params(config), random_batch(8)
    keys = step_lib.example_keys(0, 3, 8)
    apply = jax.jit(model.apply, static_argnames=("train",))
    out = apply({"params": params}, batch, keys, train=True)
    perm = np.array([3, 1, 7, 0, 2, 6, 4, 5])
    shuffled = apply(
        {"params": params}, {k: v[perm] for k, v in batch.items()}, keys[perm], train=True
    )
    for m in ("image", "text"):
        np.testing.assert_allclose(shuffled[m]["embedding"], out[m]["embedding"][perm], atol=1e-6)
    full = apply({"params": params}, batch, keys, train=False)
    no_drop = config_with_drop(0.0)
    plain = state.build(no_drop, mesh_lib.make_mesh(config.mesh, jax.devices()[:1])).model
    ref = jax.jit(plain.apply, static_argnames=("train",))(
        {"params": params}, batch, keys, train=True
    )
    for m in ("image", "text"):
        np.testing.assert_array_equal(full[m]["embedding"], ref[m]["embedding"])
        assert np.abs(out[m]["embedding"] - full[m]["embedding"]).max() > 1e-3


@pytest.mark.parametrize("ratio", [0.5, 0.75])
def test_gradcache_is_exact_with_token_drop(ratio):
    config = config_with_drop(ratio, batch_size=32)
    mesh = mesh_lib.make_mesh(config.mesh)
    params, batch = init_params(config), random_batch(32)
    (loss1, _), g1 = step_grads(config, mesh, params, batch, accum_steps=1, step=5)
    (loss4, _), g4 = step_grads(config, mesh, params, batch, accum_steps=4, step=5)
    np.testing.assert_allclose(loss4, loss1, rtol=1e-5)
    assert_trees_close(g4, g1, rtol=1e-5)
    # The masks did matter: without dropping the loss is another.
    (loss0, _), _ = step_grads(config_with_drop(0.0, batch_size=32), mesh, params, batch, step=5)
    assert abs(float(loss0) - float(loss1)) > 1e-4


def test_unmasked_tuning_phase_switches_on_the_step():
    config = config_with_drop(0.5, batch_size=16, **{"model.towers.image.token_drop_until": 4})
    assert token_drop.phase_starts(config) == (0, 4)  # the text tower drops throughout
    mesh = mesh_lib.make_mesh(config.mesh)
    params, batch = init_params(config), random_batch(16)
    with jax.set_mesh(mesh):
        model = state.build(config, mesh).model
        objective = losses.Objective(config.objectives, mesh)
        make = lambda m: step_lib.make_grad_fn(m, objective)  # GradCache: the test above
        fn = jax.jit(token_drop.phased_grad_fn(model, config, make))
        got = {
            s: jax.device_get(fn(s, params, batch, step_lib.example_keys(0, s, 16))) for s in (3, 4)
        }
    after = config_with_drop(0.5, batch_size=16, **{"model.towers.image.token_drop": 0.0})
    for s, c in ((3, config), (4, after)):
        (loss, _), grads = step_grads(c, mesh, params, batch, step=s)
        np.testing.assert_allclose(got[s][0][0], loss, rtol=1e-5)
        assert_trees_close(got[s][1], grads, rtol=1e-5)


def test_resume_across_the_phase_switch_is_bitwise(tmp_path):
    """4 steps straight against 2 steps, a checkpoint restored into a fresh state, and 2
    more: the masks come from the restored step, so the runs agree bit for bit. (The data
    position's resume is tests/test_resume.py's.)"""
    config = config_with_drop(0.5, **{"model.towers.image.token_drop_until": 3})
    mesh, built, step = compiled_step(config)
    batches = [sharding.global_batch(config_batch(config, i), mesh) for i in range(4)]
    with jax.set_mesh(mesh):
        straight = state.init_state(built.init_fn, jax.random.key(0), built.shardings)
        for b in batches:
            straight, _ = step(straight, b)
        resumed = state.init_state(built.init_fn, jax.random.key(0), built.shardings)
        for b in batches[:2]:
            resumed, _ = step(resumed, b)
        ckpt = Checkpointer(str(tmp_path), 1, 1)
        ckpt.manager.save(2, args=ocp.args.Composite(state=ocp.args.StandardSave(resumed)))
        ckpt.close()
        del resumed
        ckpt = Checkpointer(str(tmp_path), 1, 1)
        resumed, _ = ckpt.restore(2, built.abstract, None)
        ckpt.close()
        for b in batches[2:]:
            resumed, _ = step(resumed, b)
    a, b = jax.device_get(straight), jax.device_get(resumed)
    assert int(b.step) == 4
    for (path, x), y in zip(jax.tree_util.tree_leaves_with_path(a), jax.tree.leaves(b)):
        np.testing.assert_array_equal(x, y, err_msg=jax.tree_util.keystr(path))
