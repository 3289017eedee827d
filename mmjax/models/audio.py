"""Audio Spectrogram Transformer tower (Gong et al. 2021, AST; Gong et al. 2022, SSAST).

waveform -> log-mel spectrogram (spectrogram.py, float32, on the device) -> normalised
(per example, or by fixed dataset statistics as AST does) -> SpecAugment in training ->
patches over time x frequency (a conv with patch size and stride, overlapping when the
stride is smaller, as AST's 16 x 16 patches every 10) -> class token and learned position
embeddings -> the shared encoder.
"""

import dataclasses
from typing import ClassVar

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections

from mmjax.models import layers
from mmjax.models.registry import register_tower
from mmjax.models.signals import spans, standardize
from mmjax.models.spectrogram import MelConfig, log_mel
from mmjax.models.tower import Tokens, tower
from mmjax.models.vit import add_position_embeddings, encoder_size, vit_size


@dataclasses.dataclass(frozen=True)
class SpecAugment:
    """Time and frequency masks (Park et al. 2019): `time_masks` spans of up to
    `time_mask_width` frames and `freq_masks` spans of up to `freq_mask_width` mel bins."""

    time_masks: int = 0
    time_mask_width: int = 0
    freq_masks: int = 0
    freq_mask_width: int = 0

    @property
    def active(self) -> bool:
        return self.time_masks * self.time_mask_width + self.freq_masks * self.freq_mask_width > 0

    def mask(self, key: jax.Array, frames: int, bins: int) -> jax.Array:
        """bool [frames, bins], True where one example's spectrogram is masked."""
        u = jax.random.uniform(key, (self.time_masks + self.freq_masks, 2))
        time = spans(u[: self.time_masks], frames, self.time_mask_width)
        freq = spans(u[self.time_masks :], bins, self.freq_mask_width)
        return time[:, None] | freq[None, :]


class SpectrogramStem(nn.Module):
    """Waveforms [B, samples] -> patch tokens of their normalised log-mel spectrograms.

    Masked cells are set to 0 after normalisation (the mean of a standardised
    spectrogram). Time patches that do not fit are dropped (a VALID conv).
    """

    example_rank: ClassVar[int] = 1  # one example is [samples], a mono waveform

    width: int
    mel: MelConfig
    patch: tuple[int, int] = (16, 16)  # (frames, mel bins)
    stride: tuple[int, int] = (16, 16)
    normalize: str = "example"
    mean: float = 0.0
    std: float = 1.0
    augment: SpecAugment = SpecAugment()
    cls_token: bool = True
    pre_norm: bool = False
    dtype: layers.Dtype = jnp.float32

    def features(self, waveform: jax.Array, keys: jax.Array | None, train: bool) -> jax.Array:
        """float32 [B, frames, n_mels]: the normalised (and, in training, masked)
        spectrogram the patches are cut from."""
        spec = log_mel(waveform.astype(jnp.float32), self.mel)
        spec = standardize(spec, self.normalize, self.mean, self.std, axes=(-2, -1))
        if train and keys is not None and self.augment.active:
            _, frames, bins = spec.shape
            mask = jax.vmap(lambda k: self.augment.mask(k, frames, bins))(keys)
            spec = jnp.where(mask, 0.0, spec)
        return spec

    @nn.compact
    def __call__(self, waveform: jax.Array, keys=None, train: bool = False) -> Tokens:
        spec = self.features(waveform, keys, train)
        if spec.shape[1] < self.patch[0] or spec.shape[2] < self.patch[1]:
            raise ValueError(f"Spectrogram {spec.shape[1:]} is smaller than patch {self.patch}.")
        x = nn.Conv(
            self.width,
            self.patch,
            strides=self.stride,
            padding="VALID",
            dtype=self.dtype,
            kernel_init=layers.dense_init((None, None, None, "embed")),
            bias_init=layers.zeros_init(("embed",)),
            name="patch_embed",
        )(spec[..., None].astype(self.dtype))
        batch, t, f, _ = x.shape
        x = x.reshape(batch, t * f, self.width)
        return Tokens(add_position_embeddings(self, x, self.cls_token, self.pre_norm))


def mel_config(c: ml_collections.ConfigDict) -> MelConfig:
    """The MelConfig of a tower config (which has every MelConfig field)."""
    return MelConfig(**{f.name: c[f.name] for f in dataclasses.fields(MelConfig)})


@register_tower(
    "audio",
    variant="B",  # a ViT size (vit.VIT_SIZES): mu, Ti, S, M, B, L, ...
    width=0,  # 0: from the variant
    depth=0,
    mlp_dim=0,
    num_heads=0,
    pool="cls",  # cls | gap | map
    pre_norm=False,
    **dataclasses.asdict(MelConfig()),  # sample_rate, n_fft, hop_length, ... (spectrogram.py)
    normalize="example",  # example (per utterance) | fixed (mean, std: AST's) | none
    mean=0.0,
    std=1.0,
    patch=(16, 16),  # (frames, mel bins)
    stride=(0, 0),  # 0: the patch size (no overlap, SSAST); AST: (10, 10)
    time_masks=0,  # SpecAugment, training only
    time_mask_width=0,  # frames
    freq_masks=0,
    freq_mask_width=0,  # mel bins
)
def audio(c: ml_collections.ConfigDict, model: ml_collections.ConfigDict):
    """An audio tower: an AST over the log-mel spectrogram of a mono waveform."""
    size = vit_size(c.variant)
    patch = tuple(c.patch)
    stem = SpectrogramStem(
        c.width or size.width,
        mel_config(c),
        patch=patch,
        stride=tuple(s or p for s, p in zip(c.stride, patch)),
        normalize=c.normalize,
        mean=c.mean,
        std=c.std,
        augment=SpecAugment(c.time_masks, c.time_mask_width, c.freq_masks, c.freq_mask_width),
        cls_token=c.pool == "cls",
        pre_norm=c.pre_norm,
        dtype=jnp.dtype(c.dtype or model.dtype),
    )
    return tower(stem, c, model, pool=c.pool, **encoder_size(c, size))
