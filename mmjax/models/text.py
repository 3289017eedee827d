"""Text Transformer tower (Radford et al. 2021)."""

import flax.linen as nn
import jax
import jax.numpy as jnp

from mmjax.models import layers

POOLS = ("eot", "last", "first")


class TextTransformer(nn.Module):
    """Token + learned position embeddings, pre-LN encoder, final LN, one pooled token.

    `causal=True` with `pool="eot"` is CLIP: a causal mask, features taken at the
    end-of-text token, found as the argmax of the ids (EOT has the largest id).
    `causal=False` with `pool="last"` is a bidirectional encoder that masks padding
    (id `pad_id`) and takes the last non-padding token.
    """

    width: int
    depth: int
    mlp_dim: int
    num_heads: int
    vocab_size: int
    context_length: int
    causal: bool = True
    pool: str = "eot"
    pad_id: int = 0
    act: str = "gelu"
    dtype: layers.Dtype = jnp.float32
    remat: bool = False

    @nn.compact
    def __call__(self, tokens: jax.Array) -> jax.Array:
        if tokens.shape[-1] > self.context_length:
            raise ValueError(f"{tokens.shape[-1]} tokens exceed context {self.context_length}.")
        embed = nn.Embed(
            self.vocab_size,
            self.width,
            embedding_init=nn.with_logical_partitioning(
                nn.initializers.normal(0.02), ("vocab", "embed")
            ),
            name="token_embed",
        )
        pos = self.param(
            "pos_embed",
            nn.with_logical_partitioning(nn.initializers.normal(0.01), (None, "embed")),
            (self.context_length, self.width),
            jnp.float32,
        )
        length = tokens.shape[-1]
        x = (embed(tokens) + pos[:length]).astype(self.dtype)
        valid = tokens != self.pad_id
        if self.causal:
            mask = nn.make_causal_mask(tokens, dtype=jnp.bool_)
        else:
            mask = nn.make_attention_mask(valid, valid, dtype=jnp.bool_)
        x = layers.Encoder(
            self.depth,
            self.num_heads,
            self.mlp_dim,
            self.act,
            self.dtype,
            self.remat,
            name="encoder",
        )(x, mask)
        x = layers.layer_norm(self.dtype, "ln_final")(x)
        if self.pool == "eot":
            index = jnp.argmax(tokens, axis=-1)
        elif self.pool == "last":
            index = jnp.maximum(jnp.sum(valid, axis=-1) - 1, 0)
        elif self.pool == "first":
            index = jnp.zeros(tokens.shape[0], jnp.int32)
        else:
            raise ValueError(f"Unknown text pool {self.pool!r}; use one of {POOLS}.")
        return jnp.take_along_axis(x, index[:, None, None], axis=1)[:, 0]
