"""Image-text retrieval: image->text and text->image recall@k, several captions per image.

Counted as CLIP_benchmark counts them (clip_benchmark/metrics/zeroshot_retrieval.py):
scores are cosine similarities of normalised embeddings; each query retrieves exactly
its top-k gallery items; image->text is a hit when ANY of the image's captions is among
its top-k texts (CLIP_benchmark's `recall_at_k(...) > 0`), text->image when the
caption's one image is among its top-k images; recall@k is the mean over queries
(CLIP_benchmark's "text_retrieval_recall@k" and "image_retrieval_recall@k").

Ties: CLIP_benchmark takes the top k with `torch.topk`, whose order among equal scores
is unspecified; here `lax.top_k` breaks them by gallery order (the lower index comes
first, documented). So an item tied with the k-th best is retrieved only if it comes
earlier in the dataset: never an optimistic count of every tied item.

The gallery is replicated on every device; queries go in sharded, padded and masked
batches, so per device memory is (batch / devices) x gallery scores.
"""

from collections.abc import Sequence
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
from jax.sharding import Mesh

from mmjax.data.tokenizers import Tokenizer
from mmjax.evals.batches import ArraySource, Gatherer, global_batches, replicated_rows
from mmjax.evals.datasets import DATASET_DEFAULTS, build_dataset, require
from mmjax.evals.features import embed_images, embed_texts
from mmjax.evals.registry import COMMON_DEFAULTS, EVALUATORS, EvalContext, with_defaults
from mmjax.parallel import sharding

DEFAULTS = dict(**COMMON_DEFAULTS, **DATASET_DEFAULTS, ks=(1, 5, 10))


def hits_at_k(
    queries: jax.Array,
    query_owner: jax.Array,
    gallery: jax.Array,
    gallery_owner: jax.Array,
    ks: Sequence[int],
) -> jax.Array:
    """[queries, len(ks)] bool: is an item of the query's own image among its top k?

    `owner` is the image index of each row: an image's own index for images, the index
    of the image it describes for captions.
    """
    k_max = min(max(ks), gallery.shape[0])
    top = jax.lax.top_k(queries @ gallery.T, k_max)[1]
    hit = gallery_owner[top] == query_owner[:, None]
    return jnp.stack([jnp.any(hit[:, :k], axis=1) for k in ks], axis=1)


class Recalls:
    """Recall@k of queries against a gallery, over the mesh; compiled once per shape."""

    def __init__(self, mesh: Mesh, ks: Sequence[int], batch_size: int):
        self.mesh, self.ks, self.batch_size = mesh, tuple(ks), batch_size

        def counts(gallery, gallery_owner, batch):
            hits = hits_at_k(batch["query"], batch["owner"], gallery, gallery_owner, self.ks)
            return jnp.sum(hits * batch["mask"][:, None], axis=0)

        self._counts = jax.jit(counts, out_shardings=sharding.replicated(mesh))

    def __call__(
        self,
        queries: np.ndarray,
        query_owner: np.ndarray,
        gallery: np.ndarray,
        gallery_owner: np.ndarray,
        desc: str,
    ) -> np.ndarray:
        """Recall at each k, as fractions of the queries."""
        g = replicated_rows(gallery, self.mesh)
        g_owner = replicated_rows(gallery_owner.astype(np.int32), self.mesh)
        source = ArraySource(query=queries, owner=query_owner.astype(np.int32))
        total = np.zeros(len(self.ks))
        for batch in global_batches(source, self.batch_size, self.mesh, desc):
            total += np.asarray(self._counts(g, g_owner, batch))
        return total / len(queries)


class Retrieval:
    """Image->text and text->image recall@k of a two-tower model on a captioned source."""

    def __init__(
        self,
        model: nn.Module,
        source: Any,
        tokenizer: Tokenizer,
        mesh: Mesh,
        batch_size: int,
        ks: Sequence[int],
    ):
        self.source, self.mesh, self.batch_size, self.ks = source, mesh, batch_size, tuple(ks)
        captions = source.captions
        self.tokens = np.stack([tokenizer(t) for caps in captions for t in caps])
        self.text_owner = np.repeat(np.arange(len(captions)), [len(c) for c in captions])

        self._images = Gatherer(embed_images(model), mesh, ("image",))
        self._texts = Gatherer(embed_texts(model), mesh, ("tokens",))
        self._recalls = Recalls(mesh, self.ks, batch_size)

    def run(self, params: Any) -> dict[str, float]:
        bs, texts = self.batch_size, ArraySource(tokens=self.tokens)
        image_emb = self._images(params, self.source, bs, "retrieval: images")["emb"]
        text_emb = self._texts(params, texts, bs, "retrieval: texts")["emb"]
        image_owner = np.arange(len(image_emb))
        i2t = self._recalls(image_emb, image_owner, text_emb, self.text_owner, "retrieval: i2t")
        t2i = self._recalls(text_emb, self.text_owner, image_emb, image_owner, "retrieval: t2i")
        out = {f"i2t_recall@{k}": float(r) for k, r in zip(self.ks, i2t)}
        out.update({f"t2i_recall@{k}": float(r) for k, r in zip(self.ks, t2i)})
        return out


@EVALUATORS.register("retrieval")
def retrieval(c: ml_collections.ConfigDict, context: EvalContext) -> Retrieval:
    """Retrieval on `c.dataset` (synthetic, coco, flickr30k) at recall@`c.ks`."""
    c = with_defaults(c, DEFAULTS)
    source = require(build_dataset(c, context.config), "captions", c)
    return Retrieval(context.model, source, context.tokenizer, context.mesh, c.batch_size, c.ks)
