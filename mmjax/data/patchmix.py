"""PatchMix: images of the global batch mixed at patch level, the mixing proportions as soft
contrastive targets.

    c.model.towers.mix = mmconfig.tower("vit", share="image")
    c.patchmix.mix = mmconfig.patchmix(source="image", parts=3, patch_size=8)
    c.objectives.patchmix = mmconfig.objective("soft_matrix", ("mix", "text"))

Mixed image i takes each patch (a `patch_size` square, at its own position) from one of
`parts` images: itself and `parts - 1` partners (i + r) mod B, r uniform in [1, B), the
source of each patch drawn from proportions ~ Dirichlet(alpha). Its target row is the
fraction of its patches each image of the batch gave: T[i, j] = #{patches from j} / N,
rows summing to 1, at batch entry `patchmix_targets/<name>` for the `soft_matrix` loss
(losses/soft_matrix.py).

Every draw comes from example i's own key (the train step's per-example keys, folded with
the mix's name) and the partners are global batch indices, so the mixed batch is a
function of the global batch alone: the same on any number of devices, and exact under
gradient accumulation (the mix is made on the global batch before it is split into
micro-batches). Streamed accumulation, which never holds the global batch, refuses it.
"""

from collections.abc import Callable, Mapping
from typing import Any

import jax
import jax.numpy as jnp
import ml_collections

from mmjax.losses.objectives import TARGETS_PREFIX
from mmjax.models.model import modality_keys

DEFAULTS = dict(
    source="image",  # the batch's image modality that is mixed
    parts=3,  # images per mixed sequence (itself and parts - 1 partners)
    patch_size=8,  # the mixing grid, in pixels (the tower's patch size mixes whole tokens)
    alpha=1.0,  # Dirichlet concentration of the proportions (1: uniform on the simplex)
)


def _check(name: str, c: Mapping[str, Any], images: jax.Array) -> None:
    b, h, w = images.shape[:3]
    p = int(c["patch_size"])
    if h % p or w % p:
        raise ValueError(f"patchmix.{name}: patch_size={p} does not divide images of {h}x{w}.")
    if not 2 <= int(c["parts"]) <= b:
        raise ValueError(f"patchmix.{name}: parts must be in [2, batch={b}], got {c['parts']}.")
    if not float(c["alpha"]) > 0:
        raise ValueError(f"patchmix.{name}: alpha must be positive, got {c['alpha']}.")


def draw(keys: jax.Array, num_patches: int, parts: int, alpha: float) -> jax.Array:
    """Each example's source for each patch, as a global batch index: [B, N] int32."""
    b = keys.shape[0]

    def one(i, key):
        k_partner, k_prop, k_patch = jax.random.split(key, 3)
        partners = (i + jax.random.randint(k_partner, (parts - 1,), 1, b)) % b
        sources = jnp.concatenate([i[None], partners])
        proportions = jax.random.dirichlet(k_prop, jnp.full((parts,), alpha))
        which = jax.random.categorical(k_patch, jnp.log(proportions), shape=(num_patches,))
        return sources[which]

    return jax.vmap(one)(jnp.arange(b, dtype=jnp.int32), keys).astype(jnp.int32)


def mix(images: jax.Array, source: jax.Array, patch_size: int) -> tuple[jax.Array, jax.Array]:
    """(mixed images [B, H, W, C], targets [B, B] float32) from each patch's source [B, N]
    (patches in row-major order)."""
    b, h, w, ch = images.shape
    p = patch_size
    gh, gw = h // p, w // p
    patches = images.reshape(b, gh, p, gw, p, ch).transpose(0, 1, 3, 2, 4, 5)
    patches = patches.reshape(b, gh * gw, p, p, ch)
    mixed = patches[source, jnp.arange(gh * gw)[None, :]]  # [B, N, p, p, C]
    mixed = mixed.reshape(b, gh, gw, p, p, ch).transpose(0, 1, 3, 2, 4, 5).reshape(images.shape)
    targets = jax.nn.one_hot(source, b, dtype=jnp.float32).mean(axis=1)
    return mixed, targets


def batch_entries(
    mixes: ml_collections.ConfigDict, batch: Mapping[str, jax.Array], keys: jax.Array
) -> dict[str, jax.Array]:
    """{name: mixed images, TARGETS_PREFIX + name: targets} for every mix of `mixes`."""
    out = {}
    for name, c in mixes.items():
        images = batch[c.source]
        _check(name, c, images)
        p = int(c.patch_size)
        n = (images.shape[1] // p) * (images.shape[2] // p)
        source = draw(modality_keys(keys, "patchmix/" + name), n, int(c.parts), float(c.alpha))
        out[name], out[TARGETS_PREFIX + name] = mix(images, source, p)
    return out


def mixing(grad_fn: Callable, mixes: ml_collections.ConfigDict) -> Callable:
    """`grad_fn(params, batch, keys)` that first adds the mixed images and their targets
    to the (global) batch; `grad_fn` itself when there is no mix."""
    if not mixes:
        return grad_fn

    def mixed_grad_fn(params, batch: dict, keys: jax.Array):
        return grad_fn(params, {**batch, **batch_entries(mixes, batch, keys)}, keys)

    return mixed_grad_fn
