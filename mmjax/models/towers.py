"""Two-tower contrastive model: image ViT + text Transformer -> shared embedding space."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections

from mmjax.models import layers
from mmjax.models.registry import MODELS
from mmjax.models.text import TextTransformer
from mmjax.models.vit import ViT, decode_variant


def l2_normalize(x: jax.Array, eps: float = 1e-12) -> jax.Array:
    x = x.astype(jnp.float32)
    return x * jax.lax.rsqrt(jnp.maximum(jnp.sum(x * x, axis=-1, keepdims=True), eps))


class TwoTower(nn.Module):
    """CLIP/SigLIP model. `__call__` returns normalised embeddings, scale and bias.

    The logit scale is exp(t) for a learned t, clipped at `max_scale` (CLIP clips at 100);
    the bias exists only when `bias_init` is set (SigLIP).
    """

    image: nn.Module
    text: nn.Module
    embed_dim: int
    proj_bias: bool = False
    temperature_init: float = 2.6592600369327779  # log(1 / 0.07)
    max_scale: float = 100.0
    bias_init: float | None = None

    def _projection(self, name: str) -> nn.Dense:
        """A tower's linear map into the joint space."""
        return nn.Dense(
            self.embed_dim,
            use_bias=self.proj_bias,
            kernel_init=layers.dense_init(("embed", "joint")),
            bias_init=layers.zeros_init(("joint",)),
            name=name,
        )

    def setup(self) -> None:
        self.image_proj = self._projection("image_proj")
        self.text_proj = self._projection("text_proj")
        self.t = self.param("t", nn.initializers.constant(self.temperature_init), (), jnp.float32)
        if self.bias_init is not None:
            self.b = self.param("b", nn.initializers.constant(self.bias_init), (), jnp.float32)

    def encode_image(self, images: jax.Array) -> jax.Array:
        return l2_normalize(self.image_proj(self.image(images)))

    def encode_text(self, tokens: jax.Array) -> jax.Array:
        return l2_normalize(self.text_proj(self.text(tokens)))

    def scale_and_bias(self) -> tuple[jax.Array, jax.Array]:
        scale = jnp.minimum(jnp.exp(self.t), self.max_scale)
        bias = self.b if self.bias_init is not None else jnp.zeros((), jnp.float32)
        return scale, bias

    def __call__(self, images: jax.Array, tokens: jax.Array) -> dict[str, jax.Array]:
        scale, bias = self.scale_and_bias()
        return {
            "image": self.encode_image(images),
            "text": self.encode_text(tokens),
            "scale": scale,
            "bias": bias,
        }


def _image_tower(config: ml_collections.ConfigDict, dtype: jnp.dtype) -> ViT:
    c = config.image
    size, patch = decode_variant(c.variant)
    return ViT(
        width=c.width or size.width,
        depth=c.depth or size.depth,
        mlp_dim=c.mlp_dim or size.mlp_dim,
        num_heads=c.num_heads or size.num_heads,
        patch_size=patch,
        pool=c.pool,
        pre_norm=c.pre_norm,
        patch_bias=c.patch_bias,
        act=config.act,
        dtype=dtype,
        remat=config.remat,
    )


def _text_tower(config: ml_collections.ConfigDict, dtype: jnp.dtype) -> TextTransformer:
    c = config.text
    return TextTransformer(
        width=c.width,
        depth=c.depth,
        mlp_dim=c.mlp_dim,
        num_heads=c.num_heads,
        vocab_size=c.vocab_size,
        context_length=c.context_length,
        causal=c.causal,
        pool=c.pool,
        act=config.act,
        dtype=dtype,
        remat=config.remat,
    )


@MODELS.register("two_tower")
def two_tower(config: ml_collections.ConfigDict) -> TwoTower:
    dtype = jnp.dtype(config.dtype)
    return TwoTower(
        image=_image_tower(config, dtype),
        text=_text_tower(config, dtype),
        embed_dim=config.embed_dim,
        proj_bias=config.proj_bias,
        temperature_init=config.temperature_init,
        max_scale=config.max_scale,
        bias_init=config.bias_init,
    )
