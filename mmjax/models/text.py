"""Text Transformer tower (Radford et al. 2021)."""

from typing import ClassVar

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections

from mmjax.models import layers
from mmjax.models.registry import register_tower
from mmjax.models.tower import Tokens, tower

TEXT_POOLS = ("eot", "last", "first")


class TextStem(nn.Module):
    """Token + learned position embeddings; the padding mask and the token to pool.

    `causal=True` with `pool="eot"` is CLIP: a causal mask, features taken at the
    end-of-text token, found as the argmax of the ids (EOT has the largest id).
    `causal=False` with `pool="last"` is a bidirectional encoder that masks padding
    (id `pad_id`) and takes the last non-padding token.
    """

    example_rank: ClassVar[int] = 1  # one example is [L] token ids

    width: int
    vocab_size: int
    context_length: int
    causal: bool = True
    pool: str = "eot"
    pad_id: int = 0
    dtype: layers.Dtype = jnp.float32

    @nn.compact
    def __call__(self, tokens: jax.Array, keys=None, train: bool = False) -> Tokens:
        del keys, train
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
        x = (embed(tokens) + pos[: tokens.shape[-1]]).astype(self.dtype)
        valid = tokens != self.pad_id
        if self.pool == "eot":
            index = jnp.argmax(tokens, axis=-1)
        elif self.pool == "last":
            index = jnp.maximum(jnp.sum(valid, axis=-1) - 1, 0)
        elif self.pool == "first":
            index = jnp.zeros(tokens.shape[0], jnp.int32)
        else:
            raise ValueError(f"Unknown text pool {self.pool!r}; use one of {TEXT_POOLS}.")
        return Tokens(x, valid, self.causal, index)


@register_tower(
    "text",
    width=512,
    depth=12,
    mlp_dim=2048,
    num_heads=8,
    vocab_size=49408,
    context_length=77,
    causal=True,
    pool="eot",  # eot | last | first
)
def text(c: ml_collections.ConfigDict, model: ml_collections.ConfigDict):
    """A text tower: token embeddings and a Transformer, causal with EOT pooling (CLIP)."""
    stem = TextStem(
        c.width,
        c.vocab_size,
        c.context_length,
        causal=c.causal,
        pool=c.pool,
        dtype=jnp.dtype(c.dtype or model.dtype),
    )
    return tower(
        stem, c, model, pool="index", depth=c.depth, num_heads=c.num_heads, mlp_dim=c.mlp_dim
    )
