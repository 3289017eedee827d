"""Parameter groups: learning-rate and weight-decay multipliers by regex and layer-wise
learning-rate decay, against a float64 numpy AdamW; groups that restate the defaults give
optax.adamw's numbers bit for bit."""

import jax
import jax.numpy as jnp
import numpy as np
import optax

from mmjax import optim
from mmjax import params as params_lib
from tests.helpers import param_shapes, tiny_config

DEPTH = 3


def config_with(**optim_fields):
    c = tiny_config(**{"model.towers.image.depth": DEPTH, "optim.grad_clip": 0.0})
    for k, v in optim_fields.items():
        c.optim[k] = v
    return c


def random_like(params, seed: int):
    rng = np.random.default_rng(seed)
    return jax.tree.map(lambda x: rng.normal(size=np.shape(x)).astype(np.float32), params)


def random_params(config):
    """Parameters of the config's shapes, drawn on the host (no init to compile)."""
    return random_like(param_shapes(config), 100)


def run(tx, params, grads_list):
    s = tx.init(params)
    update = jax.jit(tx.update)
    for g in grads_list:
        u, s = update(g, s, params)
        params = optax.apply_updates(params, u)
    return jax.device_get(params)


def test_trivial_groups_are_optax_adamw_bitwise():
    # Rules that restate the defaults take the parameter-group path all the same.
    config = config_with(lr_mults=((".*", 1.0),), wd_mults=(("kernel$", 1.0), (".*", 0.0)))
    assert optim.has_groups(config.optim)
    params = random_params(config)
    grads = [random_like(params, i) for i in range(3)]
    tx, schedule = optim.make_optimizer(config)
    c = config.optim
    ref = optax.adamw(
        schedule, c.b1, c.b2, c.eps, weight_decay=c.weight_decay, mask=optim.decay_mask
    )
    mine, theirs = run(tx, params, grads), run(ref, params, grads)
    for a, b in zip(jax.tree.leaves(mine), jax.tree.leaves(theirs)):
        np.testing.assert_array_equal(a, b)


def expected_multipliers(name: str, shape) -> tuple[np.ndarray, float]:
    """(lr multiplier, weight-decay multiplier) by hand, for the rules of the test below."""
    lr = 1.0
    if name.startswith("text/"):
        lr = 0.1
    if name.startswith("image/stem/"):
        lr = 0.5 ** (DEPTH + 1)
    if name.startswith("image/encoder/blocks/"):
        lr = (0.5 ** np.array([3.0, 2.0, 1.0])).reshape((DEPTH,) + (1,) * (len(shape) - 1))
    wd = 1.0 if name.endswith("kernel") else 0.0
    if name.endswith("pos_embed"):
        wd = 1.0
    if name == "image/proj/kernel":
        wd = 0.5
    return np.broadcast_to(lr, shape), wd


def numpy_adamw(c, lr_at, params, grads_list):
    """AdamW (Loshchilov & Hutter 2019) in float64, one multiplier pair per parameter."""
    names = params_lib.names(params)
    flat = [np.asarray(p, np.float64) for p in jax.tree.leaves(params)]
    m = [np.zeros_like(p) for p in flat]
    v = [np.zeros_like(p) for p in flat]
    for t, grads in enumerate(grads_list, start=1):
        for i, (name, g) in enumerate(zip(names, jax.tree.leaves(grads))):
            g = np.asarray(g, np.float64)
            m[i] = c.b1 * m[i] + (1 - c.b1) * g
            v[i] = c.b2 * v[i] + (1 - c.b2) * g * g
            adam = (m[i] / (1 - c.b1**t)) / (np.sqrt(v[i] / (1 - c.b2**t)) + c.eps)
            lr_mult, wd_mult = expected_multipliers(name, flat[i].shape)
            step = adam + c.weight_decay * wd_mult * flat[i]
            flat[i] = flat[i] - lr_at(t - 1) * lr_mult * step
    return flat


GROUPS = dict(
    lr_mults=(("^text/", 0.1),),
    wd_mults=(("pos_embed$", 1.0), ("^image/proj/kernel$", 0.5)),
    layer_decay=0.5,
    layer_decay_towers=("image",),
)


def groups_run(config):
    """(initial params, the optimizer's after 3 steps, float64 numpy AdamW's, optimizer state)."""
    params = random_params(config)
    grads = [random_like(params, i) for i in range(3)]
    tx, schedule = optim.make_optimizer(config)
    got = jax.tree.leaves(run(tx, params, grads))
    want = numpy_adamw(config.optim, lambda s: float(schedule(s)), params, grads)
    return jax.tree.leaves(params), got, want, jax.eval_shape(tx.init, params)


def test_groups_and_layer_decay_equal_numpy_adamw():
    config = config_with(**GROUPS)
    _, got, want, _ = groups_run(config)
    for name, a, b in zip(params_lib.names(random_params(config)), got, want):
        np.testing.assert_allclose(a, b, rtol=2e-6, atol=1e-7, err_msg=name)


def test_groups_with_bfloat16_moments():
    """optim.moment_dtype applies under parameter groups too: the moments are stored in
    bfloat16 and the updates stay within bfloat16 rounding of float64 AdamW's."""
    config = config_with(**GROUPS, moment_dtype="bfloat16")
    before, got, want, opt_state = groups_run(config)
    moments = [x.dtype for x in jax.tree.leaves(opt_state) if x.ndim > 0]
    assert moments and all(d == jnp.bfloat16 for d in moments), set(moments)
    for p, a, b in zip(before, got, want):
        np.testing.assert_allclose(a - p, b - p, rtol=3e-2, atol=1e-5)  # updates ~1e-3


def test_layer_decay_multipliers():
    config = config_with(layer_decay=0.8)
    params = param_shapes(config)
    mults = dict(
        zip(params_lib.names(params), jax.tree.leaves(optim.lr_multipliers(config.optim)(params)))
    )
    np.testing.assert_allclose(mults["image/stem/patch_embed/kernel"], 0.8**4)
    np.testing.assert_allclose(
        np.ravel(mults["image/encoder/blocks/mlp/fc1/kernel"]), [0.8**3, 0.8**2, 0.8]
    )
    np.testing.assert_allclose(
        mults["text/encoder/blocks/mlp/fc1/kernel"].ravel(), [0.8]
    )  # depth 1
    np.testing.assert_allclose(mults["text/stem/token_embed/embedding"], 0.8**2)
    for name in ("image/norm/scale", "image/proj/kernel", "objectives/image_text/t"):
        assert mults[name] == 1.0, name
