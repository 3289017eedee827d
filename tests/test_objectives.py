"""Every objective through the real train step: many terms at once, 1-to-K captions,
labels, teacher embeddings and token features; exact under gradient accumulation and the
same on 8 devices as on 1."""

import functools

import jax
import numpy as np
import pytest

from mmjax import config as config_lib
from mmjax import losses
from mmjax.losses.objectives import rows
from mmjax.parallel import mesh as mesh_lib
from tests.helpers import assert_trees_close, host_batch, init_params, step_grads, tiny_config


def every_objective():
    """Image and text towers, a "captions" modality (K=2 captions per image, sharing the
    text tower) and coarse labels; one term for every registered loss."""
    c = tiny_config(batch_size=32)
    obj = config_lib.objective
    with c.unlocked():
        c.data.synthetic.captions = 2
        c.model.towers.captions = config_lib.tower("text", share="text")
        c.data.modalities.captions = config_lib.modality("text", key="captions", captions=2)
        c.data.modalities.coarse = config_lib.modality("label", key="shape_label")
        c.objectives.ring = obj("softmax_ring", ("image", "text"), tile_size=3, chunk_size=2)
        c.objectives.siglip = obj("sigmoid", ("image", "text"), weight=0.5, bias_init=-5.0)
        c.objectives.siglip_ring = obj("sigmoid_ring", ("text", "image"), bias_init=-5.0)
        c.objectives.supcon = obj("multi_positive", ("image", "text"), labels="coarse")
        c.objectives.one_to_k = obj(
            "multi_positive_ring", ("image", "captions"), labels="@example", tile_size=3
        )
        c.objectives.soft = obj("soft_targets", ("image", "text"), alpha=0.3)
        c.objectives.maskcon = obj("soft_targets_masked", ("image", "text"), labels="coarse")
        c.objectives.filip = obj("filip", ("image", "text"), tile_size=2, chunk_size=3)
        c.objectives.mrl = obj("matryoshka", ("text", "image"), dims=(4, 8, 16))
    return c


CONFIG = every_objective()


# Losses whose terms need more than a pair of towers and the batch, each exercised through
# the train step (1 = 8 devices, accumulation) in its own file: view pairs
# (tests/test_views.py), a queue in the train state (tests/test_queue.py), heads' values
# (tests/test_heads.py) and PatchMix's targets (tests/test_patchmix.py).
ELSEWHERE = {"ntxent", "ntxent_ring", "softmax_queue", "distill", "moco", "mean", "soft_matrix"}


def test_every_registered_loss_has_a_term():
    registered = {n for n in losses.LOSSES.names() if not n.startswith("test_")}
    assert registered >= ELSEWHERE  # a renamed loss must not drop out of both lists
    assert {t.loss for t in CONFIG.objectives.values()} == registered - ELSEWHERE


@functools.cache
def grads(devices: int, accum_steps: int):
    mesh = mesh_lib.make_mesh(CONFIG.mesh, jax.devices()[:devices])
    return step_grads(CONFIG, mesh, init_params(CONFIG), host_batch(CONFIG), accum_steps)


def assert_same(a, b, rtol=1e-5):
    (loss_a, metrics_a), grads_a = a
    (loss_b, metrics_b), grads_b = b
    np.testing.assert_allclose(loss_a, loss_b, rtol=rtol)
    for k in metrics_b:
        np.testing.assert_allclose(metrics_a[k], metrics_b[k], rtol=rtol, atol=1e-6, err_msg=k)
    assert_trees_close(grads_a, grads_b, rtol=rtol)


def test_the_total_is_the_weighted_sum_and_every_term_trains():
    (loss, metrics), g = grads(8, 1)
    total = sum(t.weight * metrics[f"{name}/loss"] for name, t in CONFIG.objectives.items())
    np.testing.assert_allclose(loss, total, rtol=1e-6)
    assert set(g["objectives"]) == set(CONFIG.objectives)
    for name, term in g["objectives"].items():  # every term's temperature gets a gradient
        assert np.abs(term["t"]) > 0, name
    assert "captions" not in g  # the captions share the text tower's parameters


def test_accumulation_gives_the_full_batch_gradient_for_every_objective():
    assert_same(grads(8, 2), grads(8, 1))


def test_eight_devices_equal_one():
    assert_same(grads(8, 1), grads(1, 1))


def test_one_to_k_captions_are_k_positives_each_counted_once():
    """The 1-to-K term equals a float64 reference: image i's positives are its K captions."""
    config = CONFIG
    params, batch = init_params(config), host_batch(config)
    mesh = mesh_lib.make_mesh(config.mesh, jax.devices()[:1])
    from mmjax import state

    model = state.build(config, mesh).model
    out = jax.jit(model.apply)({"params": params}, batch)
    x = np.asarray(out["image"]["embedding"], np.float64)
    y = np.asarray(rows(out["captions"]["embedding"]), np.float64)
    assert y.shape[0] == 2 * x.shape[0]
    s = float(np.exp(params["objectives"]["one_to_k"]["t"]))
    logits = s * x @ y.T
    owner = np.repeat(np.arange(len(x)), 2)
    pos = owner[None, :] == np.arange(len(x))[:, None]

    def supcon(z, p):  # Khosla et al. eq. 2, L_out: mean log-likelihood over positives
        log_p = (
            z
            - np.log(np.exp(z - z.max(1, keepdims=True)).sum(1, keepdims=True))
            - z.max(1, keepdims=True)
        )
        return -np.mean((log_p * p).sum(1) / p.sum(1))

    expected = 0.5 * (supcon(logits, pos) + supcon(logits.T, pos.T))
    (_, metrics), _ = grads(1, 1)
    np.testing.assert_allclose(metrics["one_to_k/loss"], expected, rtol=1e-5)


@pytest.mark.parametrize("bad", ["nope"])
def test_a_term_needing_labels_without_them_is_refused(bad):
    c = tiny_config()
    with c.unlocked():
        c.objectives.supcon = config_lib.objective("multi_positive", ("image", "text"))
    with pytest.raises(ValueError, match="needs labels"):
        mesh = mesh_lib.make_mesh(c.mesh)
        losses.Objective(c.objectives, mesh).batch_keys  # noqa: B018
