"""Attention through `jax.nn.dot_product_attention` equals softmax attention written out
in float64 numpy: padding and causal masks, pooling heads, bfloat16 activations."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from mmjax.models import layers, tower

B, N, W, H = 3, 6, 16, 4


def attention_numpy(x, p, mask):
    """Multi-head self-attention in float64: logits q.k / sqrt(d); a masked entry is
    excluded; a query with every key masked averages all values (the softmax of equal
    logits that a -inf-free masked softmax gives)."""
    x = np.asarray(x, np.float64)
    qkv = np.einsum("bnw,wthd->bnthd", x, p["qkv"]["kernel"]) + p["qkv"]["bias"]
    q, k, v = qkv[:, :, 0], qkv[:, :, 1], qkv[:, :, 2]
    logits = np.einsum("bqhd,bkhd->bhqk", q, k) / np.sqrt(q.shape[-1])
    if mask is not None:
        m = np.broadcast_to(mask, logits.shape)
        logits = np.where(m, logits, -np.inf)
        logits = np.where(m.any(-1, keepdims=True), logits, 0.0)
    w = np.exp(logits - logits.max(-1, keepdims=True))
    w /= w.sum(-1, keepdims=True)
    out = np.einsum("bhqk,bkhd->bqhd", w, v)
    return np.einsum("bqhd,hdw->bqw", out, p["out"]["kernel"]) + p["out"]["bias"]


def masks():
    valid = np.array([[1, 1, 1, 1, 0, 0], [1, 1, 1, 1, 1, 1], [1, 0, 0, 0, 0, 0]], bool)
    t = lambda causal, m: tower.Tokens(jnp.zeros((B, N, W)), m, causal)
    return {
        "none": None,
        "padding": tower.attention_mask(t(False, jnp.asarray(valid))),
        "causal": tower.attention_mask(t(True, None)),
        "causal+padding": tower.attention_mask(t(True, jnp.asarray(valid))),
    }


@pytest.mark.parametrize("kind", list(masks()))
def test_attention_equals_float64_reference(kind):
    mask = masks()[kind]
    x = jax.random.normal(jax.random.key(0), (B, N, W))
    module = layers.Attention(H, implementation="xla")
    params = module.init(jax.random.key(1), x, mask)["params"]
    params = nn.unbox(params)
    out = jax.jit(module.apply)({"params": params}, x, mask)
    ref = attention_numpy(x, jax.device_get(params), None if mask is None else np.asarray(mask))
    np.testing.assert_allclose(out, ref, rtol=2e-6, atol=2e-6)


def test_attention_bfloat16_accumulates_logits_in_float32():
    """bf16 activations: within bf16 rounding of the float64 result (the inputs and
    weights rounded to bf16 alone move it about 1e-2)."""
    mask = masks()["causal+padding"]
    x = jax.random.normal(jax.random.key(0), (B, N, W))
    module = layers.Attention(H, dtype=jnp.bfloat16, implementation="xla")
    params = module.init(jax.random.key(1), x, mask)["params"]
    params = nn.unbox(params)
    out = jax.jit(module.apply)({"params": params}, x.astype(jnp.bfloat16), mask)
    assert out.dtype == jnp.bfloat16
    ref = attention_numpy(x, jax.device_get(params), np.asarray(mask))
    np.testing.assert_allclose(np.asarray(out, np.float32), ref, atol=6e-2)


def test_map_head_pools_the_real_tokens_only():
    """A padded token's value does not reach the pooled output."""
    x = jax.random.normal(jax.random.key(0), (2, N, W))
    valid = jnp.asarray([[1, 1, 1, 0, 0, 0], [1, 1, 1, 1, 1, 1]], bool)
    head = layers.MAPHead(H, 32, attention="xla")
    params = head.init(jax.random.key(1), x, valid)
    changed = x.at[0, 4].set(100.0)
    apply = jax.jit(head.apply)
    a, b = apply(params, x, valid), apply(params, changed, valid)
    np.testing.assert_allclose(a[0], b[0], rtol=1e-6, atol=1e-6)


def test_implementation_choice():
    assert layers.attention_implementation("auto", jnp.float32, 64) == "xla"
    assert layers.attention_implementation("cudnn", jnp.float32, 64) == "cudnn"
    with pytest.raises(ValueError, match="Unknown attention"):
        layers.attention_implementation("flash", jnp.bfloat16, 64)
