"""Video Transformer tower: a ViT over frames with factorised space-time position
embeddings (TimeSformer, Bertasius et al. 2021), or over tubelets (ViViT, Arnab et al. 2021).

Frames are uint8 like images and are normalised the same way (`vit.normalize_pixels`).
With `tubelet` 1 every frame is cut into patches by the image tower's own conv (same
kernel shape, so image weights load into it); with `tubelet` t > 1 a 3D conv embeds
t x p x p tubelets. Either way the tokens get a spatial embedding [1, 1, N, W] shared by
all frames plus a temporal one [1, F, 1, W] shared by all patches, and one encoder
attends over all space-time tokens jointly.
"""

from typing import ClassVar

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections

from mmjax.models import layers
from mmjax.models.registry import register_tower
from mmjax.models.tower import Tokens, tower
from mmjax.models.vit import (
    CLIP_MEAN,
    CLIP_STD,
    decode_variant,
    encoder_size,
    normalize_pixels,
    prepend_class_token,
)


def add_factorised_embeddings(
    module: nn.Module, x: jax.Array, axis_name: str, cls_token: bool, pre_norm: bool
) -> jax.Array:
    """[B, A, N, W] tokens on an A x N grid (frames x patches, channels x time patches)
    -> [B, (1 +) A * N, W]: a learned embedding per row (`axis_name`, [1, A, 1, W]) and
    per column (`pos_embed`, [1, 1, N, W]) added, flattened row-major, the class token
    first (it needs no position: it is learned itself), then `ln_pre` if asked.

    The factorised form has A + N vectors where a joint table has A x N, and lets the
    model tell rows apart even where their contents are the same.
    """
    batch, rows, cols, width = x.shape
    init = nn.initializers.normal(width**-0.5)
    names = (None, None, None, "embed")
    row = module.param(axis_name, nn.with_logical_partitioning(init, names), (1, rows, 1, width))
    col = module.param("pos_embed", nn.with_logical_partitioning(init, names), (1, 1, cols, width))
    x = (x + row.astype(x.dtype) + col.astype(x.dtype)).reshape(batch, rows * cols, width)
    if cls_token:
        x = prepend_class_token(module, x)
    if pre_norm:
        x = layers.layer_norm(x.dtype, "ln_pre")(x).astype(x.dtype)
    return x


class VideoStem(nn.Module):
    """Videos [B, F, H, W, 3] (uint8, normalised here; or float, already normalised)
    -> tokens over (F / tubelet) x (H / p) x (W / p) patches."""

    example_rank: ClassVar[int] = 4  # one example is [F, H, W, 3]

    width: int
    patch_size: int
    tubelet: int = 1
    cls_token: bool = True
    pre_norm: bool = False
    patch_bias: bool = True
    mean: tuple[float, ...] = CLIP_MEAN
    std: tuple[float, ...] = CLIP_STD
    dtype: layers.Dtype = jnp.float32

    @nn.compact
    def __call__(self, video: jax.Array, keys=None, train: bool = False) -> Tokens:
        del keys, train
        p, t = self.patch_size, self.tubelet
        _, frames, height, width, _ = video.shape
        if frames % t:
            raise ValueError(f"{frames} frames are not divisible by tubelet {t}.")
        if height % p or width % p:
            raise ValueError(f"Frame size {(height, width)} is not divisible by patch {p}.")
        kernel = (p, p) if t == 1 else (t, p, p)  # 2D: the image tower's conv, per frame
        x = nn.Conv(
            self.width,
            kernel,
            strides=kernel,
            padding="VALID",
            use_bias=self.patch_bias,
            dtype=self.dtype,
            kernel_init=layers.dense_init((None,) * (len(kernel) + 1) + ("embed",)),
            bias_init=layers.zeros_init(("embed",)),
            name="patch_embed",
        )(normalize_pixels(video, self.mean, self.std).astype(self.dtype))
        batch, f, h, w, _ = x.shape
        x = x.reshape(batch, f, h * w, self.width)
        x = add_factorised_embeddings(self, x, "temporal_embed", self.cls_token, self.pre_norm)
        return Tokens(x)


@register_tower(
    "video",
    variant="B/16",  # a ViT size and patch, as the image tower's
    width=0,  # 0: from the variant
    depth=0,
    mlp_dim=0,
    num_heads=0,
    tubelet=1,  # frames per 3D patch; 1: per-frame patches (the image tower's conv)
    pool="cls",  # cls (one class token over all space-time tokens) | gap | map
    pre_norm=False,
    patch_bias=True,
    mean=CLIP_MEAN,
    std=CLIP_STD,
)
def video(c: ml_collections.ConfigDict, model: ml_collections.ConfigDict):
    """A video tower: a ViT of `variant` over frames or tubelets, space-time attention."""
    size, patch = decode_variant(c.variant)
    stem = VideoStem(
        c.width or size.width,
        patch,
        tubelet=c.tubelet,
        cls_token=c.pool == "cls",
        pre_norm=c.pre_norm,
        patch_bias=c.patch_bias,
        mean=tuple(c.mean),
        std=tuple(c.std),
        dtype=jnp.dtype(c.dtype or model.dtype),
    )
    return tower(stem, c, model, pool=c.pool, **encoder_size(c, size))
