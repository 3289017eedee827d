"""L2 normalisation, shared by the towers (embeddings) and the losses that re-normalise
what they are given (token features, embedding prefixes)."""

import jax
import jax.numpy as jnp


def l2_normalize(a: jax.Array) -> jax.Array:
    """`a / |a|` over the last axis, in float32; a zero vector (padding) stays zero, and its
    gradient is finite."""
    a = a.astype(jnp.float32)
    return a * jax.lax.rsqrt(jnp.maximum(jnp.sum(a * a, axis=-1, keepdims=True), 1e-12))
