"""What evaluators compute from a model: embeddings of images and texts, frozen features.

`features="backbone"` (the default of the linear probe and kNN) is the image tower's
pooled output *before* the projection into the joint space: the CLIP paper's linear
probes use it ("for CLIP-ViT models, we used the features before the linear projection
to the embedding space", Radford et al. 2021, A.3), as DINO's kNN uses its backbone
output. `features="embedding"` is the normalised joint-space embedding (what zero-shot
and retrieval compare, and what CLIP_benchmark's linear probe uses).
"""

from collections.abc import Callable
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import Mesh

from mmjax.evals.batches import Gatherer
from mmjax.train.step import normalize_images

FEATURES = ("backbone", "embedding")
EmbedFn = Callable[[Any, dict], dict[str, jax.Array]]


def _backbone(model: nn.Module, images: jax.Array) -> jax.Array:
    return model.image(images)


def embed_images(model: nn.Module, kind: str = "embedding") -> EmbedFn:
    """`fn(params, batch) -> {"emb": float32 [b, d]}` from the batch's uint8 "image"."""
    if kind not in FEATURES:
        raise ValueError(f"Unknown features {kind!r}; use one of {FEATURES}.")
    method = _backbone if kind == "backbone" else "encode_image"

    def fn(params: Any, batch: dict) -> dict[str, jax.Array]:
        images = normalize_images(batch["image"])
        emb = model.apply({"params": params}, images, method=method)
        return {"emb": emb.astype(jnp.float32)}

    return fn


def embed_texts(model: nn.Module) -> EmbedFn:
    """`fn(params, batch) -> {"emb": float32 [b, d]}` from the batch's "tokens"."""

    def fn(params: Any, batch: dict) -> dict[str, jax.Array]:
        emb = model.apply({"params": params}, batch["tokens"], method="encode_text")
        return {"emb": emb.astype(jnp.float32)}

    return fn


class ImageFeatures:
    """`(params, source) -> (features [n, d] float32, labels [n] int32)` on the host."""

    def __init__(self, model: nn.Module, mesh: Mesh, kind: str, batch_size: int):
        embed = embed_images(model, kind)

        def fn(params: Any, batch: dict) -> dict:
            return {"features": embed(params, batch)["emb"], "label": batch["label"]}

        self.batch_size = batch_size
        self._gather = Gatherer(fn, mesh, ("image", "label"))

    def __call__(self, params: Any, source: Any, desc: str) -> tuple[np.ndarray, np.ndarray]:
        out = self._gather(params, source, self.batch_size, desc)
        return out["features"], out["label"].astype(np.int32)
