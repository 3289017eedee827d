"""Vision Transformer image tower (Dosovitskiy et al. 2021), as used by CLIP and SigLIP."""

import dataclasses
from typing import ClassVar

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections

from mmjax.models import layers
from mmjax.models.registry import register_tower
from mmjax.models.tower import Tokens, tower

# CLIP's image normalisation, applied on the device to the uint8 pixels from the host.
CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)


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


def vit_size(name: str) -> ViTSize:
    """A size by name ("B"): for towers whose patches are set by their own fields."""
    if name not in VIT_SIZES:
        raise ValueError(f"Unknown ViT size {name!r}; known: {', '.join(VIT_SIZES)}.")
    return VIT_SIZES[name]


def decode_variant(variant: str) -> tuple[ViTSize, int]:
    """ "B/16" -> (the B size, patch 16)."""
    name, _, patch = variant.partition("/")
    if name not in VIT_SIZES or not patch.isdigit():
        known = ", ".join(f"{n}/16" for n in VIT_SIZES)
        raise ValueError(f"Unknown ViT variant {variant!r}; expected NAME/PATCH, e.g. {known}.")
    return VIT_SIZES[name], int(patch)


def encoder_size(c: ml_collections.ConfigDict, size: ViTSize) -> dict[str, int]:
    """depth, num_heads, mlp_dim of a tower config: its own fields where set (non-zero),
    else its size's."""
    return dict(
        depth=c.depth or size.depth,
        num_heads=c.num_heads or size.num_heads,
        mlp_dim=c.mlp_dim or size.mlp_dim,
    )


def normalize_pixels(x: jax.Array, mean, std) -> jax.Array:
    """uint8 pixels -> float32 standardised per channel; float input is taken as already
    normalised (what open_clip's preprocessing hands over)."""
    if not jnp.issubdtype(x.dtype, jnp.integer):
        return x.astype(jnp.float32)
    x = x.astype(jnp.float32) / 255.0
    return (x - jnp.asarray(mean, jnp.float32)) / jnp.asarray(std, jnp.float32)


class PatchStem(nn.Module):
    """Patch embedding, an optional class token, learned position embeddings, `ln_pre`.

    Input: images [B, H, W, 3] (uint8, normalised here; or float, already normalised).
    `patch_bias=False` drops the patch embedding's bias and `pre_norm=True` adds the
    LayerNorm CLIP applies before the blocks, as in open_clip / OpenAI.
    """

    example_rank: ClassVar[int] = 3  # one example is [H, W, 3]

    width: int
    patch_size: int
    cls_token: bool = True
    pre_norm: bool = False
    patch_bias: bool = True
    mean: tuple[float, ...] = CLIP_MEAN
    std: tuple[float, ...] = CLIP_STD
    dtype: layers.Dtype = jnp.float32

    @nn.compact
    def __call__(self, images: jax.Array, keys=None, train: bool = False) -> Tokens:
        del keys, train
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
        )(normalize_pixels(images, self.mean, self.std).astype(self.dtype))
        batch, h, w, _ = x.shape
        x = x.reshape(batch, h * w, self.width)
        return Tokens(add_position_embeddings(self, x, self.cls_token, self.pre_norm))


def prepend_class_token(module: nn.Module, x: jax.Array) -> jax.Array:
    """[B, N, W] -> [B, N + 1, W]: a learned class token (`cls`, zero-initialised) first."""
    batch, _, width = x.shape
    cls = module.param("cls", layers.zeros_init((None, None, "embed")), (1, 1, width), jnp.float32)
    return jnp.concatenate([jnp.tile(cls, (batch, 1, 1)).astype(x.dtype), x], axis=1)


def add_position_embeddings(
    module: nn.Module, x: jax.Array, cls_token: bool, pre_norm: bool
) -> jax.Array:
    """[B, N, W] patch tokens -> [B, N(+1), W]: class token first, learned position
    embeddings (`pos_embed`, std width^-0.5) added, then `ln_pre` if asked. Shared by the
    stems of patch-based towers; parameters are created in `module`'s scope."""
    width = x.shape[-1]
    if cls_token:
        x = prepend_class_token(module, x)
    pos = module.param(
        "pos_embed",
        nn.with_logical_partitioning(nn.initializers.normal(width**-0.5), (None, None, "embed")),
        (1, x.shape[1], width),
        jnp.float32,
    )
    x = x + pos.astype(x.dtype)
    if pre_norm:
        x = layers.layer_norm(x.dtype, "ln_pre")(x).astype(x.dtype)
    return x


@register_tower(
    "vit",
    variant="B/16",
    width=0,  # 0: from the variant
    depth=0,
    mlp_dim=0,
    num_heads=0,
    pool="cls",  # cls | gap | map
    pre_norm=False,
    patch_bias=True,  # open_clip/OpenAI ViTs have none (False on import)
    mean=CLIP_MEAN,
    std=CLIP_STD,
)
def vit(c: ml_collections.ConfigDict, model: ml_collections.ConfigDict):
    """An image tower: a ViT of `variant` ("B/16": size B, patch 16), any field overridable."""
    size, patch = decode_variant(c.variant)
    width = c.width or size.width
    stem = PatchStem(
        width,
        patch,
        cls_token=c.pool == "cls",
        pre_norm=c.pre_norm,
        patch_bias=c.patch_bias,
        mean=tuple(c.mean),
        std=tuple(c.std),
        dtype=jnp.dtype(c.dtype or model.dtype),
    )
    return tower(stem, c, model, pool=c.pool, **encoder_size(c, size))
