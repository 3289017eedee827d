"""Self-supervised heads: MAE's masked pixel MSE and MLM's masked cross-entropy against
float64 NumPy (He et al. 2022: per-patch normalised targets, masked patches only; Devlin
et al. 2019: 80/10/10 masking, chosen positions only), and heads in the train step on 1
and 8 devices."""

import jax
import jax.numpy as jnp
import numpy as np

from mmjax import config as config_lib
from mmjax.models import heads
from tests.helpers import assert_trees_close, host_batch, init_params, step_grads, tiny_config
from tests.test_train_step import on_mesh


def np_targets(images, p):
    x = images.astype(np.float64) / 255.0
    b, h, w, c = x.shape
    out = np.zeros((b, (h // p) * (w // p), p * p * c))
    for i in range(h // p):
        for j in range(w // p):
            patch = x[:, i * p : (i + 1) * p, j * p : (j + 1) * p].reshape(b, -1)
            out[:, i * (w // p) + j] = patch
    mean, var = out.mean(-1, keepdims=True), out.var(-1, keepdims=True)
    return (out - mean) / np.sqrt(var + 1e-6)


def test_mae_loss_counts_masked_patches_only():
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (3, 8, 8, 3), dtype=np.uint8)
    target = np_targets(images, 4)
    np.testing.assert_allclose(heads.normalized_patches(jnp.asarray(images), 4), target, atol=1e-4)
    pred = rng.normal(size=target.shape).astype(np.float32)
    target = target.astype(np.float32)
    masked = np.array([[1, 0, 1, 0], [0, 0, 0, 1], [1, 1, 1, 1]], bool)
    want = [((pred[i] - target[i]) ** 2).mean(-1)[masked[i]].mean() for i in range(3)]
    got = heads.masked_mse(pred, target, masked)
    np.testing.assert_allclose(got, want, rtol=1e-5)
    # Kept patches changed, in prediction and target: the loss does not move.
    changed = np.where(masked[..., None], pred, pred + 5.0)
    other = np.where(masked[..., None], target, -target)
    np.testing.assert_array_equal(heads.masked_mse(changed, other, masked), got)


def test_mlm_loss_counts_masked_positions_only():
    rng = np.random.default_rng(1)
    logits = rng.normal(size=(2, 5, 7)).astype(np.float32)
    targets = rng.integers(0, 7, (2, 5))
    chosen = np.array([[1, 0, 0, 1, 0], [0, 0, 0, 0, 0]], bool)
    z = logits.astype(np.float64)
    logp = z - np.log(np.exp(z).sum(-1, keepdims=True))
    want = [-np.mean([logp[0, j, targets[0, j]] for j in (0, 3)]), 0.0]
    got = heads.masked_xent(logits, targets, chosen)
    np.testing.assert_allclose(got, want, rtol=1e-5)
    other = np.where(chosen[..., None], logits, logits * 3 + 1)
    np.testing.assert_array_equal(
        heads.masked_xent(other, np.where(chosen, targets, 0), chosen), got
    )


def test_bert_mask_rates_and_padding():
    tokens = jnp.asarray(np.random.default_rng(2).integers(1, 50, (64, 100)), jnp.int32)
    tokens = tokens.at[:, 80:].set(0)  # padding
    keys = jax.random.split(jax.random.key(0), 64)
    out, chosen = heads.bert_mask(tokens, keys, 0.15, 99, 100)
    chosen, out, tokens = np.asarray(chosen), np.asarray(out), np.asarray(tokens)
    assert not chosen[:, 80:].any() and (out[:, 80:] == 0).all()
    assert abs(chosen[:, :80].mean() - 0.15) < 0.01
    assert (out[~chosen] == tokens[~chosen]).all()
    assert abs((out[chosen] == 99).mean() - 0.8) < 0.03
    assert abs((out[chosen] == tokens[chosen]).mean() - 0.1) < 0.03


def heads_config():
    """CLIP with 50% patch dropping, an MAE decoder on the image tower and MLM on text
    conditioned on the (kept) image tokens by cross-attention."""
    c = tiny_config()
    with c.unlocked():
        c.model.towers.image.token_drop = 0.5
        c.model.towers.text.causal = False
        c.model.towers.text.pool = "last"
        c.model.heads.mae = config_lib.head("mae", tower="image", width=16, mlp_dim=32)
        c.model.heads.mlm = config_lib.head(
            "mlm", tower="text", rate=0.3, cross="image", cross_mlp_dim=32
        )
        c.objectives.mae = config_lib.objective("mean", ("mae", "mae"), weight=0.5)
        c.objectives.mlm = config_lib.objective("mean", ("mlm", "mlm"), weight=0.25)
    return c


def test_heads_in_the_step_on_8_devices_equal_1():
    c = heads_config()
    params, batch = init_params(c), host_batch(c)
    assert {"mae", "mlm"} <= set(params)
    one = step_grads(c, on_mesh(c, (1, 1, 1)), params, batch)
    eight = step_grads(c, on_mesh(c, (8, 1, 1)), params, batch)
    (loss, metrics), grads = one
    want = metrics["image_text/loss"] + 0.5 * metrics["mae/loss"] + 0.25 * metrics["mlm/loss"]
    np.testing.assert_allclose(loss, want, rtol=1e-6)
    assert 0.5 < metrics["mae/loss"] < 3 and 3 < metrics["mlm/loss"] < 7  # ~1 and ~log 128
    assert np.abs(grads["mae"]["pred"]["kernel"]).max() > 0
    assert np.abs(grads["mlm"]["logits"]["kernel"]).max() > 0
    assert np.abs(grads["mlm"]["cross0"]["kv"]["kernel"]).max() > 0
    np.testing.assert_allclose(eight[0][0], loss, rtol=1e-5)
    assert_trees_close(eight[1], grads, rtol=1e-5)


def test_mlm_cross_attention_reads_the_context_tokens_it_may_see():
    """The masked text's loss moves with the image tokens, not with masked-out ones."""
    head = heads.MLMHead(vocab_size=11, cross="image", cross_mlp_dim=16)
    rng = np.random.default_rng(3)
    hidden = jnp.asarray(rng.normal(size=(2, 5, 8)), jnp.float32)
    context = jnp.asarray(rng.normal(size=(2, 4, 6)), jnp.float32)
    mask = jnp.asarray([[1, 1, 1, 0], [1, 1, 0, 0]], bool)
    aux = (jnp.asarray(rng.integers(1, 11, (2, 5))), jnp.ones((2, 5), bool))
    variables = head.init(jax.random.key(0), {"hidden": hidden}, aux, context=(context, mask))
    f = jax.jit(lambda ctx: head.apply(variables, {"hidden": hidden}, aux, context=(ctx, mask)))
    base = f(context)
    hidden_changed = jnp.where(mask[..., None], context, context + 3.0)
    np.testing.assert_allclose(f(hidden_changed), base, rtol=1e-6)
    assert (np.abs(f(jnp.where(mask[..., None], -context, context)) - base) > 1e-4).all()
