"""Self-supervised heads: model parts that turn a tower's token outputs into a per-example
loss [B], computed inside the model's forward after the towers.

    config.model.heads.mae = mmconfig.head("mae", tower="image", depth=1)
    config.objectives.mae = mmconfig.objective("mean", ("mae", "mae"), weight=1.0)

The model returns `{head: {"values": [B]}}` beside the towers' outputs, and the `mean`
loss (losses/per_example.py) averages a head's values over the global batch. A
per-example output is like any tower output to exact gradient accumulation: its gradient
is weight / B, so GradCache needs nothing new.

- "mae" (He et al. 2022): a small Transformer decoder over the tower's kept tokens plus a
  learned mask token at every dropped place (the tower's `token_drop` is the masking, so
  the encoder sees only the kept tokens; FLIP's dropping and MAE's masking are one draw),
  predicting each patch's pixels; loss = the MSE against the per-patch normalised pixels,
  over the masked patches only.
- "mlm" (Devlin et al. 2019): BERT's masking of a text modality (`mask_rate` of the real
  tokens are chosen; of those 80% become `mask_id`, 10% a random token, 10% stay), the
  corrupted text through the text tower (give it `causal=False` for a bidirectional
  encoder), a linear map to the vocabulary; loss = cross-entropy over the chosen
  positions only, averaged per example (0 for an example with none). With `cross` set
  (a modality, e.g. "image"), `cross_depth` pre-LN blocks let the masked text's tokens
  cross-attend to that tower's tokens (the kept ones under token dropping) before the
  vocabulary map: masked language modelling conditioned on the image (M3AE, MPMA-style
  fusion), whose gradient also reaches the image tower.
"""

import dataclasses
import functools
from collections.abc import Callable
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections

from mmjax.models import layers
from mmjax.registry import Registry

HEADS = Registry("head type")
COMMON_DEFAULTS = dict(type="", tower="")  # tower: the modality whose tower it reads


@dataclasses.dataclass(frozen=True)
class HeadType:
    build: Callable[..., nn.Module]
    defaults: dict[str, Any]


def register_head(name: str, **defaults: Any) -> Callable:
    """Registers `build(head_config, model_config) -> head factory` (call it with
    `name=`) with its config defaults.

    A head is `head(tower outputs, aux, keys, train) -> [B]`; `aux` is the raw input of
    the tower's modality, or, for a head with a `corrupt(x, keys, train) -> (tower
    input, aux)` method (MLM), what that returns: the model then runs the tower on the
    corrupted input for the head alone."""

    def decorator(build: Callable) -> Callable:
        HEADS.register(name)(HeadType(build, {**COMMON_DEFAULTS, "type": name, **defaults}))
        return build

    return decorator


def head_defaults(name: str) -> dict[str, Any]:
    return dict(HEADS.get(name).defaults)


# ------------------------------------------------------------------------------ MAE


def patchify(images: jax.Array, p: int) -> jax.Array:
    """[B, H, W, C] -> [B, (H/p)(W/p), p*p*C], patches in the stem's row-major order."""
    b, h, w, c = images.shape
    x = images.reshape(b, h // p, p, w // p, p, c).transpose(0, 1, 3, 2, 4, 5)
    return x.reshape(b, (h // p) * (w // p), p * p * c)


def normalized_patches(images: jax.Array, p: int, eps: float = 1e-6) -> jax.Array:
    """MAE's targets: each patch's pixels (in [0, 1]) standardised by its own mean and
    variance (`norm_pix_loss`)."""
    x = patchify(images.astype(jnp.float32) / (255.0 if images.dtype == jnp.uint8 else 1.0), p)
    mean, var = x.mean(-1, keepdims=True), x.var(-1, keepdims=True)
    return (x - mean) / jnp.sqrt(var + eps)


def masked_mse(pred: jax.Array, target: jax.Array, masked: jax.Array) -> jax.Array:
    """[B]: mean over each example's masked patches of the per-patch mean squared error."""
    per_patch = ((pred.astype(jnp.float32) - target) ** 2).mean(-1)
    m = masked.astype(jnp.float32)
    return (per_patch * m).sum(1) / jnp.maximum(m.sum(1), 1.0)


class MAEHead(nn.Module):
    """Decoder over kept tokens + mask tokens -> pixels of every patch; masked MSE."""

    patch_size: int
    cls_token: bool
    width: int = 64
    depth: int = 1
    num_heads: int = 2
    mlp_dim: int = 128
    dtype: layers.Dtype = jnp.float32

    @nn.compact
    def __call__(self, tower_out: dict, raw: jax.Array, keys=None, train=False) -> jax.Array:
        hidden = tower_out["hidden"]
        if "kept" in tower_out:
            kept = tower_out["kept"]
        elif self.is_initializing():  # no dropping outside training: shapes only
            kept = jnp.broadcast_to(jnp.arange(hidden.shape[1]), hidden.shape[:2])
        else:
            raise ValueError(
                "The mae head reconstructs dropped patches: give its tower token_drop > 0."
            )
        first = int(self.cls_token)
        p = self.patch_size
        n = (raw.shape[1] // p) * (raw.shape[2] // p) + first
        x = nn.Dense(self.width, dtype=self.dtype, name="embed")(hidden)
        mask_token = self.param("mask_token", nn.initializers.normal(0.02), (self.width,))
        full = jnp.broadcast_to(mask_token.astype(x.dtype), (x.shape[0], n, self.width))
        rows = jnp.arange(x.shape[0])[:, None]
        full = full.at[rows, kept].set(x)  # kept tokens back at their places
        pos = self.param("pos_embed", nn.initializers.normal(0.02), (n, self.width))
        h = layers.Encoder(
            self.depth, self.num_heads, self.mlp_dim, dtype=self.dtype, name="decoder"
        )(full + pos.astype(full.dtype))
        h = layers.layer_norm(self.dtype, "norm")(h)[:, first:]
        pred = nn.Dense(self.patch_size**2 * raw.shape[-1], name="pred")(h)
        masked = jnp.ones((x.shape[0], n), bool).at[rows, kept].set(False)[:, first:]
        return masked_mse(pred, normalized_patches(raw, self.patch_size), masked)


@register_head("mae", width=64, depth=1, num_heads=2, mlp_dim=128)
def mae(c: ml_collections.ConfigDict, model: ml_collections.ConfigDict) -> Callable:
    """An MAE decoder for the ViT of modality `tower` (its patch size and class token)."""
    from mmjax.models.vit import decode_variant

    tower = model.towers[c.tower]
    tower = model.towers[tower.share] if tower.share else tower
    return functools.partial(
        MAEHead,
        decode_variant(tower.variant)[1],
        tower.pool == "cls",
        c.width,
        c.depth,
        c.num_heads,
        c.mlp_dim,
        jnp.dtype(model.dtype),
    )


# ------------------------------------------------------------------------------ MLM


def bert_mask(
    tokens: jax.Array,
    keys: jax.Array,
    rate: float,
    mask_id: int,
    vocab_size: int,
    pad_id: int = 0,
) -> tuple[jax.Array, jax.Array]:
    """(corrupted tokens, chosen [B, L] bool): BERT's 80/10/10 masking, per example key."""

    def one(t, k):
        k1, k2, k3 = jax.random.split(k, 3)
        u = jax.random.uniform(k1, t.shape)
        chosen = (u < rate) & (t != pad_id)
        v = jax.random.uniform(k2, t.shape)
        random = jax.random.randint(k3, t.shape, 1, vocab_size)
        out = jnp.where(chosen & (v < 0.8), mask_id, t)
        return jnp.where(chosen & (v >= 0.8) & (v < 0.9), random, out), chosen

    return jax.vmap(one)(tokens, keys)


def masked_xent(logits: jax.Array, targets: jax.Array, chosen: jax.Array) -> jax.Array:
    """[B]: mean cross-entropy over each example's chosen positions (0 if none)."""
    logp = jax.nn.log_softmax(logits.astype(jnp.float32), axis=-1)
    nll = -jnp.take_along_axis(logp, targets[..., None], axis=-1)[..., 0]
    m = chosen.astype(jnp.float32)
    return (nll * m).sum(1) / jnp.maximum(m.sum(1), 1.0)


class CrossBlock(nn.Module):
    """Pre-LN cross-attention of the text's tokens to another tower's tokens (M3AE /
    MPMA-style fusion), then an MLP, both residual."""

    num_heads: int
    mlp_dim: int
    dtype: layers.Dtype = jnp.float32

    @nn.compact
    def __call__(self, x: jax.Array, context: jax.Array, context_mask: jax.Array) -> jax.Array:
        width = x.shape[-1]
        head_dim = width // self.num_heads
        q = layers.DenseND(
            (self.num_heads, head_dim), ("embed",), ("heads", "kv"), self.dtype, name="q"
        )(layers.layer_norm(self.dtype, "ln_q")(x))
        c = nn.Dense(width, dtype=self.dtype, name="context")(context)  # widths may differ
        kv = layers.DenseND(
            (2, self.num_heads, head_dim), ("embed",), (None, "heads", "kv"), self.dtype, name="kv"
        )(layers.layer_norm(self.dtype, "ln_kv")(c))
        attended = layers.attend(q, kv[..., 0, :, :], kv[..., 1, :, :], context_mask[:, None, None])
        x = x + layers.DenseND((width,), ("heads", "kv"), ("embed",), self.dtype, name="out")(
            attended
        )
        mlp = layers.MlpBlock(self.mlp_dim, dtype=self.dtype, name="mlp")
        return x + mlp(layers.layer_norm(self.dtype, "ln_mlp")(x))


class MLMHead(nn.Module):
    """Vocabulary logits from the tower's token features (optionally after `cross_depth`
    cross-attention blocks to the tokens of modality `cross`); masked cross-entropy."""

    vocab_size: int
    rate: float = 0.15
    mask_id: int = -1  # -1: the last id of the vocabulary
    dtype: layers.Dtype = jnp.float32
    cross: str = ""  # a modality whose tokens the masked text attends to ("": none)
    cross_depth: int = 1
    cross_heads: int = 2
    cross_mlp_dim: int = 128

    def corrupt(self, tokens: jax.Array, keys: jax.Array | None, train: bool):
        """What the tower reads (the corrupted text) and the head's own data (targets)."""
        if keys is None:
            raise ValueError("The mlm head needs per-example keys (it masks in training).")
        mask_id = self.mask_id if self.mask_id >= 0 else self.vocab_size - 1
        corrupted, chosen = bert_mask(tokens, keys, self.rate, mask_id, self.vocab_size)
        return corrupted, (tokens, chosen)

    @nn.compact
    def __call__(self, tower_out: dict, aux, keys=None, train=False, context=None) -> jax.Array:
        """`context`: (the `cross` tower's hidden tokens [B, N, W'], their mask [B, N])."""
        tokens, chosen = aux
        h = tower_out["hidden"]
        if self.cross:
            if context is None:
                raise ValueError(f"The mlm head cross-attends to {self.cross!r}: pass its tokens.")
            for i in range(self.cross_depth):
                block = CrossBlock(
                    self.cross_heads, self.cross_mlp_dim, self.dtype, name=f"cross{i}"
                )
                h = block(h, *context)
        logits = nn.Dense(self.vocab_size, dtype=self.dtype, name="logits")(h)
        return masked_xent(logits, tokens, chosen)


@register_head(
    "mlm", rate=0.15, mask_id=-1, cross="", cross_depth=1, cross_heads=2, cross_mlp_dim=128
)
def mlm(c: ml_collections.ConfigDict, model: ml_collections.ConfigDict) -> Callable:
    """A BERT masked-token head on the text tower of modality `tower`."""
    tower = model.towers[c.tower]
    tower = model.towers[tower.share] if tower.share else tower
    return functools.partial(
        MLMHead,
        tower.vocab_size,
        float(c.rate),
        int(c.mask_id),
        jnp.dtype(model.dtype),
        str(c.cross),
        int(c.cross_depth),
        int(c.cross_heads),
        int(c.cross_mlp_dim),
    )
