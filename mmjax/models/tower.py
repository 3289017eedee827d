"""A tower: a modality's stem, the shared Transformer encoder, pooling, a projection.

Only the stem knows the modality (patchify an image or a spectrogram, embed tokens, cut a
sensor trace into windows); it returns `Tokens`, with position embeddings added. The rest
is the same for every modality: a pre-LN encoder (`layers.Encoder`), a final LayerNorm,
pooling to one vector, and a linear map into the joint space, L2-normalised.

In training a tower may drop tokens between the stem and the encoder (`token_drop`: FLIP,
Li et al. 2023, for image patches; the same for text tokens, audio patches or any other
stem's tokens): each example keeps a random subset drawn from its own PRNG key, so every
pass over the same example (GradCache's two, a resumed run's) keeps the same tokens.
"""

import functools
from typing import Any, NamedTuple

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections

from mmjax.models import layers
from mmjax.normalize import l2_normalize

POOLS = ("cls", "gap", "map", "index")
# Folded into each example's key for token dropping, so that it draws apart from any
# randomness of the stem itself (augmentation) that uses the same key.
TOKEN_DROP_SALT = 0x70D0


class Tokens(NamedTuple):
    """What a stem hands to the encoder.

    `mask` says which tokens are real (not padding): pooling and token-wise outputs use it,
    and a bidirectional encoder's attention ignores the others. A causal encoder (CLIP's
    text tower) attends by position alone, as open_clip does: padding comes after the
    pooled end token, and a real token that happens to have the padding id still counts.
    """

    x: jax.Array  # [B, N, W], position embeddings added
    mask: jax.Array | None = None  # [B, N] True for real tokens; None: all are
    causal: bool = False  # causal self-attention (CLIP's text tower)
    pool_index: jax.Array | None = None  # [B] the token pool="index" takes (text EOT)


def attention_mask(t: Tokens) -> jax.Array | None:
    """[B, 1, N, N] bool: causal by position, or the padding mask, or None for full."""
    n = t.x.shape[1]
    if t.causal:
        return jnp.tril(jnp.ones((n, n), bool))[None, None]
    if t.mask is not None:
        return t.mask[:, None, :, None] & t.mask[:, None, None, :]
    return None


def kept_tokens(n: int, forced: int, ratio: float) -> int:
    """How many of `n` tokens an example keeps: the `forced` ones (class token, pooled
    token) and round((1 - ratio) * the others), at least one of those."""
    return forced + max(1, round((1.0 - ratio) * (n - forced)))


def kept_index(t: Tokens, keys: jax.Array, ratio: float, keep_first: bool) -> jax.Array:
    """[B, keep]: which tokens each example keeps, in their original order.

    MAE-style: the tokens of lowest uniform noise (from the example's key) are kept. The
    class token (`keep_first`) and the pooled token (`pool_index`) are always kept;
    padding tokens (`mask` False) go before any real token.
    """
    batch, n, _ = t.x.shape
    draw = lambda k: jax.random.uniform(jax.random.fold_in(k, TOKEN_DROP_SALT), (n,))
    noise = jax.vmap(draw)(keys)
    if t.mask is not None:
        noise = jnp.where(t.mask, noise, noise + 1.0)  # padding is dropped first
    forced = jnp.zeros((batch, n), bool)
    if keep_first:
        forced = forced.at[:, 0].set(True)
    if t.pool_index is not None:
        forced |= jnp.arange(n)[None, :] == t.pool_index[:, None]
    noise = jnp.where(forced, -1.0, noise)
    keep = kept_tokens(n, int(keep_first) + int(t.pool_index is not None), ratio)
    return jnp.sort(jnp.argsort(noise, axis=1)[:, :keep], axis=1)


def take_tokens(t: Tokens, index: jax.Array) -> Tokens:
    """The tokens at `index` [B, keep]. Position embeddings were added by the stem, so a
    kept token still knows where it was; the mask and the pooled token's index follow the
    kept tokens, and causal attention keeps its order."""
    x = jnp.take_along_axis(t.x, index[..., None], axis=1)
    mask = None if t.mask is None else jnp.take_along_axis(t.mask, index, axis=1)
    pool = None
    if t.pool_index is not None:  # the pooled token's place among the kept ones
        pool = jnp.sum(index < t.pool_index[:, None], axis=1).astype(t.pool_index.dtype)
    return t._replace(x=x, mask=mask, pool_index=pool)


def drop_tokens(t: Tokens, keys: jax.Array, ratio: float, keep_first: bool) -> Tokens:
    """Each example keeps a random subset of its tokens (`kept_index`, `take_tokens`)."""
    return take_tokens(t, kept_index(t, keys, ratio, keep_first))


class Tower(nn.Module):
    """stem -> encoder -> norm -> pool -> projection; outputs a dict of named arrays.

    `pool`: "cls" (first token, the stem's class token), "gap" (mean of the real tokens),
    "map" (attention pooling), "index" (the token at `Tokens.pool_index`).
    Outputs: "features" (pooled, before the projection: what linear probes use),
    "embedding" (projected, L2-normalised) and, with `with_tokens`, "tokens" (every
    token projected and normalised, for token-wise objectives), "token_mask", "hidden"
    (every token after the final norm, unprojected: decoder heads) and, when tokens were
    dropped, "kept" ([B, keep] their indices among the stem's tokens).
    """

    stem: nn.Module
    depth: int
    num_heads: int
    mlp_dim: int
    embed_dim: int
    pool: str = "cls"
    proj_bias: bool = False
    act: str = "gelu"
    dtype: layers.Dtype = jnp.float32
    remat: str = "none"
    token_drop: float = 0.0
    attention: str = "auto"  # layers.ATTENTION_IMPLEMENTATIONS

    @nn.compact
    def __call__(
        self,
        x: jax.Array,
        keys: jax.Array | None = None,
        train: bool = False,
        with_tokens: bool = False,
    ) -> dict[str, jax.Array]:
        """`keys`: one PRNG key per example ([B], or None): every random choice of a stem
        (masking, augmentation) is drawn from its example's key alone."""
        t = self.stem(x, keys=keys, train=train)
        kept = None
        if train and keys is not None and self.token_drop > 0:
            kept = kept_index(t, keys, self.token_drop, keep_first=self.pool == "cls")
            t = take_tokens(t, kept)
        h = layers.Encoder(
            self.depth,
            self.num_heads,
            self.mlp_dim,
            self.act,
            self.dtype,
            self.remat,
            self.attention,
            name="encoder",
        )(t.x, attention_mask(t))
        norm = layers.layer_norm(self.dtype, "norm")
        proj = nn.Dense(
            self.embed_dim,
            use_bias=self.proj_bias,
            kernel_init=layers.dense_init(("embed", "joint")),
            bias_init=layers.zeros_init(("joint",)),
            name="proj",
        )
        features = self._pool(h, t, norm)
        out = {"features": features, "embedding": l2_normalize(proj(features))}
        if with_tokens:
            out["tokens"] = l2_normalize(proj(norm(h)))
            out["token_mask"] = jnp.ones(h.shape[:2], bool) if t.mask is None else t.mask
            out["hidden"] = norm(h)  # before the projection: what decoder heads read
            if kept is not None:  # which of the stem's tokens these are (token_drop)
                out["kept"] = kept
        return out

    def _pool(self, h: jax.Array, t: Tokens, norm: nn.Module) -> jax.Array:
        if self.pool == "cls":
            return norm(h[:, 0])
        if self.pool == "gap":
            if t.mask is None:
                return norm(h.mean(axis=1))
            w = t.mask[..., None].astype(h.dtype)
            return norm((h * w).sum(axis=1) / jnp.maximum(w.sum(axis=1), 1))
        if self.pool == "map":
            head = layers.MAPHead(
                self.num_heads, self.mlp_dim, self.act, self.dtype, self.attention, name="map"
            )
            return head(norm(h), t.mask)
        if self.pool == "index":
            return norm(jnp.take_along_axis(h, t.pool_index[:, None, None], axis=1)[:, 0])
        raise ValueError(f"Unknown pool {self.pool!r}; use one of {POOLS}.")


def tower(
    stem: nn.Module,
    tower_config: ml_collections.ConfigDict,
    model_config: ml_collections.ConfigDict,
    **encoder: Any,
) -> functools.partial:
    """A `Tower` factory (call it with `name=`): `encoder` gives depth, num_heads, mlp_dim
    and pool; dtype, remat and the projection come from the configs."""
    return functools.partial(
        Tower,
        stem=stem,
        embed_dim=model_config.embed_dim,
        proj_bias=model_config.proj_bias,
        act=model_config.act,
        dtype=tower_dtype(tower_config, model_config),
        remat=tower_config.remat or model_config.remat,
        token_drop=float(tower_config.get("token_drop", 0.0)),
        attention=model_config.get("attention", "auto"),
        **encoder,
    )


def tower_dtype(tower_config: ml_collections.ConfigDict, model_config) -> jnp.dtype:
    return jnp.dtype(tower_config.dtype or model_config.dtype)
