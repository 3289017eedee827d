"""Vision Transformer image tower (Dosovitskiy et al. 2021), as used by CLIP and SigLIP."""

import dataclasses

import flax.linen as nn
import jax
import jax.numpy as jnp

from mmjax.models import layers


@dataclasses.dataclass(frozen=True)
class ViTSize:
    width: int
    depth: int
    mlp_dim: int
    num_heads: int


# Widths, depths, MLP sizes and heads from the ViT, scaling-ViT and SigLIP papers.
VIT_SIZES: dict[str, ViTSize] = {
    "mu": ViTSize(64, 2, 256, 2),  # a micro model for the CPU demo and tests
    "Ti": ViTSize(192, 12, 768, 3),
    "S": ViTSize(384, 12, 1536, 6),
    "M": ViTSize(512, 12, 2048, 8),
    "B": ViTSize(768, 12, 3072, 12),
    "L": ViTSize(1024, 24, 4096, 16),
    "So400m": ViTSize(1152, 27, 4304, 16),
    "H": ViTSize(1280, 32, 5120, 16),
    "g": ViTSize(1408, 40, 6144, 16),
    "G": ViTSize(1664, 48, 8192, 16),
}


def decode_variant(variant: str) -> tuple[ViTSize, int]:
    """ "B/16" -> (the B size, patch 16)."""
    name, _, patch = variant.partition("/")
    if name not in VIT_SIZES or not patch.isdigit():
        known = ", ".join(f"{n}/16" for n in VIT_SIZES)
        raise ValueError(f"Unknown ViT variant {variant!r}; expected NAME/PATCH, e.g. {known}.")
    return VIT_SIZES[name], int(patch)


class ViT(nn.Module):
    """Patch embedding, learned position embeddings, pre-LN encoder, pooling.

    `pool`: "cls" (class token), "gap" (mean of patch tokens) or "map" (attention pooling).
    `pre_norm` adds the LayerNorm that CLIP applies to the patch sequence before the blocks.
    `patch_bias=False` drops the patch embedding's bias, as in CLIP (open_clip, OpenAI).
    Input: uint8-range images already normalised, shape [batch, height, width, 3].
    Output: pooled features [batch, width].
    """

    width: int
    depth: int
    mlp_dim: int
    num_heads: int
    patch_size: int
    pool: str = "cls"
    pre_norm: bool = False
    patch_bias: bool = True
    act: str = "gelu"
    dtype: layers.Dtype = jnp.float32
    remat: bool = False

    @nn.compact
    def __call__(self, images: jax.Array) -> jax.Array:
        p = self.patch_size
        if images.shape[1] % p or images.shape[2] % p:
            raise ValueError(f"Image size {images.shape[1:3]} is not divisible by patch {p}.")
        x = nn.Conv(
            self.width,
            (p, p),
            strides=(p, p),
            padding="VALID",
            use_bias=self.patch_bias,
            dtype=self.dtype,
            kernel_init=layers.dense_init((None, None, None, "embed")),
            bias_init=layers.zeros_init(("embed",)),
            name="patch_embed",
        )(images.astype(self.dtype))
        batch, h, w, _ = x.shape
        x = x.reshape(batch, h * w, self.width)
        if self.pool == "cls":
            cls = self.param(
                "cls", layers.zeros_init((None, None, "embed")), (1, 1, self.width), jnp.float32
            )
            x = jnp.concatenate([jnp.tile(cls, (batch, 1, 1)).astype(x.dtype), x], axis=1)
        pos = self.param(
            "pos_embed",
            nn.with_logical_partitioning(
                nn.initializers.normal(self.width**-0.5), (None, None, "embed")
            ),
            (1, x.shape[1], self.width),
            jnp.float32,
        )
        x = x + pos.astype(x.dtype)
        if self.pre_norm:
            x = layers.layer_norm(self.dtype, "ln_pre")(x).astype(self.dtype)
        x = layers.Encoder(
            self.depth,
            self.num_heads,
            self.mlp_dim,
            self.act,
            self.dtype,
            self.remat,
            name="encoder",
        )(x)
        return self._pool(x)

    def _pool(self, x: jax.Array) -> jax.Array:
        norm = layers.layer_norm(self.dtype, "ln_post")
        if self.pool == "cls":
            return norm(x[:, 0])
        if self.pool == "gap":
            return norm(x.mean(axis=1))
        if self.pool == "map":
            return layers.MAPHead(self.num_heads, self.mlp_dim, self.act, self.dtype, name="map")(
                norm(x)
            )
        raise ValueError(f"Unknown pool {self.pool!r}; use cls, gap or map.")
