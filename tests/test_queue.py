"""MoCo-style queue and self-distillation: `softmax_queue`, `distill`, `moco` against float64
NumPy from the papers' formulas, the FIFO queue in the train state, and exact resume.

softmax_queue: L = s X Y^T, U = s X Q^T (valid queue rows only); row i of x->y:
-log(e^{L_ii} / (sum_j e^{L_ij} + sum_q e^{U_iq})); y->x is CLIP's column cross-entropy;
loss = the mean of both. distill/moco: x->y_teacher only, Y_t receives no gradient.
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.sharding import NamedSharding, PartitionSpec

from mmjax import config as config_lib
from mmjax import state as state_lib
from mmjax.checkpoint import Checkpointer
from mmjax.losses import get_loss, sharded_loss
from mmjax.parallel import mesh as mesh_lib
from mmjax.parallel.mesh import BATCH_AXES
from mmjax.train import loop
from tests.helpers import tiny_config
from tests.test_losses import _logsumexp, _mesh, make_batch


def _xent(logits, n):
    """Per-row -log softmax at column i of [n, n + extra] logits, and d/dlogits."""
    lse = _logsumexp(logits, 1)
    p = np.exp(logits - lse[:, None])
    p[np.arange(n), np.arange(n)] -= 1
    return lse - logits[np.arange(n), np.arange(n)], p


def np_queue_loss(name, x, y, s, yt, queue, valid):
    x, y, yt, queue = (a.astype(np.float64) for a in (x, y, yt, queue))
    n, q = len(x), queue[valid]
    keys = y if name == "softmax_queue" else yt
    rows, g = _xent(s * np.concatenate([x @ keys.T, x @ q.T], 1), n)
    dx = s * g @ np.concatenate([keys, q])
    ds = (g * np.concatenate([x @ keys.T, x @ q.T], 1)).sum()
    if name != "softmax_queue":
        return rows.mean(), dx / n, np.zeros_like(y), ds / n
    cols, gc = _xent(s * y @ x.T, n)
    dx2, dy2, ds2 = s * gc.T @ y, s * gc @ x, (gc * (y @ x.T)).sum()
    dy1 = s * g[:, :n].T @ x
    loss = (rows.mean() + cols.mean()) / 2
    return loss, (dx + dx2) / (2 * n), (dy1 + dy2) / (2 * n), (ds + ds2) / (2 * n)


@pytest.mark.parametrize("n_dev", [1, 8])
@pytest.mark.parametrize("name", ["softmax_queue", "moco", "distill"])
def test_queue_losses_match_numpy(name, n_dev):
    x, y, s, _ = make_batch("hot", n=32)
    yt, queue = make_batch("typical", n=48, seed=1)[:2]
    yt = yt[:32]
    valid = np.arange(48) < 40  # the last 8 rows not filled yet: ignored
    mesh = _mesh(n_dev)
    loss = get_loss(name)
    fn = sharded_loss(loss, mesh)
    put = lambda a: jax.device_put(a, NamedSharding(mesh, PartitionSpec(BATCH_AXES)))
    inputs = {"y_teacher": put(yt), "y_queue": put(queue), "y_queue_valid": put(valid)}
    inputs = {k: v for k, v in inputs.items() if k in loss.inputs}
    f = jax.jit(jax.value_and_grad(lambda a, b, c: fn(a, b, c, 0.0, **inputs)[0], (0, 1, 2)))
    got, (dx, dy, ds) = f(put(x), put(y), jnp.float32(s))
    used = valid if "y_queue" in loss.inputs else np.zeros_like(valid)
    want = np_queue_loss(name, x, y, s, yt, queue, used)
    np.testing.assert_allclose(got, want[0], rtol=1e-5)
    for g, w in zip((dx, dy, ds), want[1:]):
        np.testing.assert_allclose(g, w, rtol=1e-5, atol=1e-5 * np.abs(w).max())


def queue_config(**overrides):
    """CLIP whose x->y direction also scores a 2-step queue of the EMA teacher's texts."""
    c = tiny_config(total_steps=4, ckpt_every=100, **overrides)
    with c.unlocked():
        c.ema.decay = 0.9
        c.objectives.image_text = config_lib.objective(
            "softmax_queue", ("image", "text"), queue_size=32, teacher="ema"
        )
    return c


def saved_state(workdir, config, step=None, devices=None):
    ckpt = Checkpointer(f"{workdir}/checkpoints", 1, 1)
    mesh = mesh_lib.make_mesh(config.mesh, devices)
    abstract = state_lib.build(config, mesh).abstract
    s, _ = ckpt.restore(step or ckpt.latest_step(), abstract, None)
    ckpt.close()
    return s


def test_queue_resumes_bitwise_and_restores_onto_4_devices(tmp_path):
    cache = str(tmp_path / "xla_cache")
    config = queue_config(compile_cache_dir=cache)
    loop.train(config, str(tmp_path / "straight"))
    loop.train(queue_config(compile_cache_dir=cache, stop_at_step=2), str(tmp_path / "resumed"))
    loop.train(config, str(tmp_path / "resumed"))
    straight = jax.device_get(saved_state(tmp_path / "straight", config))
    resumed = jax.device_get(saved_state(tmp_path / "resumed", config))
    q = straight.queues["image_text"]
    assert int(q["pointer"]) == 0 and int(q["filled"]) == 32  # 4 steps of 16 rows, FIFO
    assert np.abs(q["rows"]).sum(1).min() > 0.99  # every row a unit embedding
    for (path, a), b in zip(
        jax.tree_util.tree_leaves_with_path(straight), jax.tree.leaves(resumed)
    ):
        np.testing.assert_array_equal(a, b, err_msg=jax.tree_util.keystr(path))

    # Elastic: the step-2 state restored onto 4 devices is the saved one, bit for bit
    # (queue rows resharded, pointer, EMA); the loop then trains on from it as from any
    # restored state (test_reliability's elastic run).
    at2 = jax.device_get(saved_state(tmp_path / "resumed", config, step=2))
    on4 = saved_state(tmp_path / "resumed", config, step=2, devices=jax.devices()[:4])
    assert on4.queues["image_text"]["rows"].sharding.mesh.devices.size == 4
    for a, b in zip(jax.tree.leaves(at2), jax.tree.leaves(jax.device_get(on4))):
        np.testing.assert_array_equal(a, b)
