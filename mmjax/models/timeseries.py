"""Time-series tower for multichannel sensor signals (IMU, ECG, EEG, any [T, C] trace).

A trace [B, T, C] is standardised per channel (by each example's own statistics, or by
fixed dataset ones), cut into patches of `patch_length` samples and projected linearly:
one token per patch across all channels (ImageBind's IMU stem, Girdhar et al. 2023), or,
with `channel_tokens`, one token per channel and patch with a learned channel embedding
(PatchTST's channel independence, Nie et al. 2023, with the channels attending to each
other). In training, spans of patches can be masked (set to the channel mean), drawn
from each example's key.
"""

import dataclasses
from typing import ClassVar

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections

from mmjax.models import layers
from mmjax.models.registry import register_tower
from mmjax.models.signals import span_mask, standardize
from mmjax.models.tower import Tokens, tower
from mmjax.models.video import add_factorised_embeddings
from mmjax.models.vit import add_position_embeddings, encoder_size, vit_size


@dataclasses.dataclass(frozen=True)
class TimeMasks:
    """`count` spans of up to `max_width` patches each, masked in every channel."""

    count: int = 0
    max_width: int = 0

    @property
    def active(self) -> bool:
        return self.count * self.max_width > 0

    def mask(self, keys: jax.Array, patches: int) -> jax.Array:
        """bool [B, patches] from [B] keys: True for the masked patches."""
        return jax.vmap(lambda k: span_mask(k, patches, self.count, self.max_width))(keys)


class SeriesStem(nn.Module):
    """Traces [B, T, C] (T divisible by `patch_length`) -> patch tokens."""

    example_rank: ClassVar[int] = 2  # one example is [T, C]

    width: int
    patch_length: int
    channel_tokens: bool = False
    normalize: str = "example"
    mean: tuple[float, ...] = (0.0,)
    std: tuple[float, ...] = (1.0,)
    masks: TimeMasks = TimeMasks()
    cls_token: bool = True
    pre_norm: bool = False
    dtype: layers.Dtype = jnp.float32

    def patches(self, series: jax.Array, keys: jax.Array | None, train: bool) -> jax.Array:
        """float32 [B, T / patch_length, patch_length, C]: standardised, and in training
        with `keys` the masked patches zeroed."""
        batch, length, channels = series.shape
        p = self.patch_length
        if length % p:
            raise ValueError(f"{length} samples are not divisible by patch_length {p}.")
        x = standardize(series.astype(jnp.float32), self.normalize, self.mean, self.std, (1,))
        x = x.reshape(batch, length // p, p, channels)
        if train and keys is not None and self.masks.active:
            x = jnp.where(self.masks.mask(keys, length // p)[:, :, None, None], 0.0, x)
        return x

    @nn.compact
    def __call__(self, series: jax.Array, keys=None, train: bool = False) -> Tokens:
        x = self.patches(series, keys, train).astype(self.dtype)
        if self.channel_tokens:  # [B, C, N, P] -> one token per channel and patch
            embed = layers.DenseND(
                (self.width,), (None,), ("embed",), self.dtype, name="patch_embed"
            )
            x = embed(x.transpose(0, 3, 1, 2))
            x = add_factorised_embeddings(self, x, "channel_embed", self.cls_token, self.pre_norm)
        else:  # [B, N, P, C] -> one token per patch
            embed = layers.DenseND(
                (self.width,), (None, None), ("embed",), self.dtype, name="patch_embed"
            )
            x = add_position_embeddings(self, embed(x), self.cls_token, self.pre_norm)
        return Tokens(x)


@register_tower(
    "timeseries",
    variant="S",  # a ViT size (vit.VIT_SIZES): mu, Ti, S, M, B, ...
    width=0,  # 0: from the variant
    depth=0,
    mlp_dim=0,
    num_heads=0,
    pool="cls",  # cls | gap | map
    pre_norm=False,
    patch_length=16,  # samples per patch
    channel_tokens=False,  # True: a token per channel and patch, with a channel embedding
    normalize="example",  # example (per channel) | fixed (mean, std per channel) | none
    mean=(0.0,),  # "fixed": one per channel (or one for all)
    std=(1.0,),
    time_masks=0,  # training only: spans of patches masked in every channel
    time_mask_width=0,  # patches
)
def timeseries(c: ml_collections.ConfigDict, model: ml_collections.ConfigDict):
    """A tower for [T, C] sensor traces: patches over time and a Transformer."""
    size = vit_size(c.variant)
    stem = SeriesStem(
        c.width or size.width,
        c.patch_length,
        channel_tokens=c.channel_tokens,
        normalize=c.normalize,
        mean=tuple(c.mean),
        std=tuple(c.std),
        masks=TimeMasks(c.time_masks, c.time_mask_width),
        cls_token=c.pool == "cls",
        pre_norm=c.pre_norm,
        dtype=jnp.dtype(c.dtype or model.dtype),
    )
    return tower(stem, c, model, pool=c.pool, **encoder_size(c, size))
