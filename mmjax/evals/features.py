"""What evaluators compute from a model: embeddings of any modality, frozen features.

`features="backbone"` (the default of the linear probe and kNN) is a tower's pooled output
*before* the projection into the joint space: the CLIP paper's linear probes use it ("for
CLIP-ViT models, we used the features before the linear projection to the embedding
space", Radford et al. 2021, A.3), as DINO's kNN uses its backbone output.
`features="embedding"` is the normalised joint-space embedding (what zero-shot and
retrieval compare, and what CLIP_benchmark's linear probe uses).
"""

from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import Mesh

from mmjax.evals.batches import Gatherer
from mmjax.models import Model

FEATURES = ("backbone", "embedding")
EmbedFn = Callable[[Any, dict], dict[str, jax.Array]]


def embed_fn(model: Model, modality: str, kind: str = "embedding", key: str = "") -> EmbedFn:
    """`fn(params, batch) -> {"emb": float32 [b, d]}` of `modality` from `batch[key]`
    (default: the modality's name), through that modality's tower. `kind="tokens"`: every
    token's embedding, {"emb": [b, N, d], "emb_mask": [b, N]}."""
    if kind not in (*FEATURES, "tokens"):
        raise ValueError(f"Unknown features {kind!r}; use one of {FEATURES}.")
    key = key or modality

    def fn(params: Any, batch: dict) -> dict[str, jax.Array]:
        if kind == "tokens":
            emb, mask = model.apply(
                {"params": params}, modality, batch[key], method="token_embeddings"
            )
            return {"emb": emb.astype(jnp.float32), "emb_mask": mask}
        method = "features" if kind == "backbone" else "embed"
        emb = model.apply({"params": params}, modality, batch[key], method=method)
        return {"emb": emb.astype(jnp.float32)}

    return fn


def unit_rows(x: np.ndarray) -> np.ndarray:
    """Rows scaled to unit length (float32), on the host."""
    x = np.asarray(x, np.float32)
    return x / np.maximum(np.linalg.norm(x, axis=-1, keepdims=True), 1e-12)


class Features:
    """`(params, source) -> (features [n, d] float32, labels [n] int32)` on the host."""

    def __init__(self, model: Model, mesh: Mesh, modality: str, kind: str, batch_size: int):
        embed = embed_fn(model, modality, kind)

        def fn(params: Any, batch: dict) -> dict:
            return {"features": embed(params, batch)["emb"], "label": batch["label"]}

        self.batch_size = batch_size
        self._gather = Gatherer(fn, mesh, (modality, "label"))

    def __call__(self, params: Any, source: Any, desc: str) -> tuple[np.ndarray, np.ndarray]:
        out = self._gather(params, source, self.batch_size, desc)
        return out["features"], out["label"].astype(np.int32)
