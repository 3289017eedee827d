"""Retrieval between two modalities: recall@k both ways; several captions per item.

`modalities=("image", "text")` (the default) retrieves between a dataset's images and its
captions (several per image, as COCO's five); between two non-text modalities of one
dataset (`("audio", "imu")`) each example's pair is its own, one to one. Metric names
spell the directions out when they are not image/text: `audio_to_imu_recall@1`.

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

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
from jax.sharding import Mesh

from mmjax.data.tokenizers import Tokenizer
from mmjax.evals.batches import ArraySource, Gatherer, global_batches, replicated_rows
from mmjax.evals.datasets import DATASET_DEFAULTS, build_dataset, require
from mmjax.evals.features import embed_fn, unit_rows
from mmjax.evals.registry import COMMON_DEFAULTS, EVALUATORS, EvalContext, with_defaults
from mmjax.models import Model
from mmjax.parallel import sharding

DEFAULTS = dict(
    **COMMON_DEFAULTS,
    **DATASET_DEFAULTS,
    ks=(1, 5, 10),
    modalities=("image", "text"),
    dims=(),  # Matryoshka: also report recalls of embeddings truncated to these sizes
    similarity="embedding",  # or "tokens": FILIP's token-wise late interaction
)


def embedding_scores(query: dict, gallery: tuple[jax.Array, ...]) -> jax.Array:
    """Cosine similarities of normalised embeddings: [queries, gallery]."""
    return query["query"] @ gallery[0].T


def late_interaction(
    q: jax.Array, q_mask: jax.Array, g: jax.Array, g_mask: jax.Array, chunk: int = 256
) -> jax.Array:
    """FILIP's token-wise similarity [queries, gallery]: the mean over a query's real tokens
    of the best match among a gallery item's real tokens (Yao et al. 2021, eq. 4). The
    gallery is scored `chunk` items at a time, so no [queries, gallery, Nq, Ng] array is
    held."""
    n = g.shape[0]
    pad = -n % chunk
    g = jnp.pad(g, ((0, pad), (0, 0), (0, 0)))
    g_mask = jnp.pad(g_mask, ((0, pad), (0, 0)))

    def block(args):
        gc, gm = args
        s = jnp.einsum("bqd,gkd->bgqk", q, gc)
        best = jnp.where(gm[None, :, None, :], s, -jnp.inf).max(-1)  # [b, chunk, Nq]
        best = jnp.where(q_mask[:, None, :] & jnp.any(gm, -1)[None, :, None], best, 0.0)
        return best.sum(-1) / jnp.maximum(q_mask.sum(-1), 1)[:, None]

    blocks = (g.reshape(-1, chunk, *g.shape[1:]), g_mask.reshape(-1, chunk, g_mask.shape[1]))
    scores = jax.lax.map(block, blocks)  # [blocks, b, chunk]
    return jnp.moveaxis(scores, 0, 1).reshape(q.shape[0], -1)[:, :n]


def token_scores(query: dict, gallery: tuple[jax.Array, ...]) -> jax.Array:
    return late_interaction(query["query"], query["query_mask"], *gallery)


SIMILARITIES = {"embedding": embedding_scores, "tokens": token_scores}


def hits_at_k(
    scores: jax.Array, query_owner: jax.Array, gallery_owner: jax.Array, ks: Sequence[int]
) -> jax.Array:
    """[queries, len(ks)] bool: is an item of the query's own image among its top k?

    `owner` is the image index of each row: an image's own index for images, the index
    of the image it describes for captions.
    """
    k_max = min(max(ks), scores.shape[1])
    top = jax.lax.top_k(scores, k_max)[1]
    hit = gallery_owner[top] == query_owner[:, None]
    return jnp.stack([jnp.any(hit[:, :k], axis=1) for k in ks], axis=1)


class Recalls:
    """Recall@k of queries against a gallery, over the mesh; compiled once per shape.

    `similarity`: "embedding" (cosine of pooled embeddings) or "tokens" (FILIP's
    token-wise late interaction; queries and gallery come with their token masks).
    """

    def __init__(self, mesh: Mesh, ks: Sequence[int], batch_size: int, similarity="embedding"):
        self.mesh, self.ks, self.batch_size = mesh, tuple(ks), batch_size
        scores = SIMILARITIES[similarity]

        def counts(gallery, gallery_owner, batch):
            hits = hits_at_k(scores(batch, gallery), batch["owner"], gallery_owner, self.ks)
            return jnp.sum(hits * batch["mask"][:, None], axis=0)

        self._counts = jax.jit(counts, out_shardings=sharding.replicated(mesh))

    def __call__(
        self,
        queries: dict[str, np.ndarray],
        query_owner: np.ndarray,
        gallery: dict[str, np.ndarray],
        gallery_owner: np.ndarray,
        desc: str,
    ) -> np.ndarray:
        """Recall at each k, as fractions of the queries. `queries` and `gallery` are
        {"emb": rows} (and "emb_mask" for tokens)."""
        g = tuple(replicated_rows(a, self.mesh) for a in gallery.values())
        g_owner = replicated_rows(gallery_owner.astype(np.int32), self.mesh)
        arrays = {("query" + k.removeprefix("emb")): v for k, v in queries.items()}
        source = ArraySource(**arrays, owner=query_owner.astype(np.int32))
        total = np.zeros(len(self.ks))
        for batch in global_batches(source, self.batch_size, self.mesh, desc):
            total += np.asarray(self._counts(g, g_owner, batch))
        return total / len(query_owner)


def direction_names(x: str, y: str) -> tuple[str, str]:
    """Metric prefixes: "i2t"/"t2i" for image/text (as CLIP_benchmark), else spelt out."""
    if (x, y) == ("image", "text"):
        return "i2t", "t2i"
    return f"{x}_to_{y}", f"{y}_to_{x}"


class Retrieval:
    """Recall@k both ways between modalities x and y of a dataset.

    With `captions` (a list of texts per item) y's gallery is every caption, tokenized;
    otherwise x and y are read from the same examples.
    """

    def __init__(
        self,
        model: Model,
        source: Any,
        mesh: Mesh,
        batch_size: int,
        ks: Sequence[int],
        modalities: tuple[str, str] = ("image", "text"),
        tokenizer: Tokenizer | None = None,
        dims: Sequence[int] = (),
        similarity: str = "embedding",
    ):
        if similarity not in SIMILARITIES:
            raise ValueError(f"Unknown similarity {similarity!r}; use one of {list(SIMILARITIES)}.")
        if dims and similarity != "embedding":
            raise ValueError("Matryoshka prefixes (dims) need similarity='embedding'.")
        self.source, self.mesh, self.batch_size, self.ks = source, mesh, batch_size, tuple(ks)
        self.dims = tuple(dims)
        kind = "tokens" if similarity == "tokens" else "embedding"
        self.x, self.y = modalities
        self.tokens = None
        if tokenizer is not None:
            captions = source.captions
            self.tokens = np.stack([tokenizer(t) for caps in captions for t in caps])
            self.y_owner = np.repeat(np.arange(len(captions)), [len(c) for c in captions])
            self._y = Gatherer(embed_fn(model, self.y, kind, key="tokens"), mesh, ("tokens",))
        else:
            self.y_owner = np.arange(len(source))
            self._y = Gatherer(embed_fn(model, self.y, kind), mesh, (self.y,))
        self._x = Gatherer(embed_fn(model, self.x, kind), mesh, (self.x,))
        self._recalls = Recalls(mesh, self.ks, batch_size, similarity)

    def run(self, params: Any) -> dict[str, float]:
        bs = self.batch_size
        y_source = self.source if self.tokens is None else ArraySource(tokens=self.tokens)
        x_emb = self._x(params, self.source, bs, f"retrieval: {self.x}")
        y_emb = self._y(params, y_source, bs, f"retrieval: {self.y}")
        out = self._both_ways(x_emb, y_emb, "")
        for m in self.dims:
            truncated = [{"emb": unit_rows(e["emb"][:, :m])} for e in (x_emb, y_emb)]
            out |= self._both_ways(*truncated, f"@dim{m}")
        return out

    def _both_ways(self, x_emb: dict, y_emb: dict, suffix: str) -> dict[str, float]:
        x_owner = np.arange(len(x_emb["emb"]))
        x2y_name, y2x_name = direction_names(self.x, self.y)
        x2y = self._recalls(x_emb, x_owner, y_emb, self.y_owner, f"retrieval: {x2y_name}")
        y2x = self._recalls(y_emb, self.y_owner, x_emb, x_owner, f"retrieval: {y2x_name}")
        out = {f"{x2y_name}_recall@{k}{suffix}": float(r) for k, r in zip(self.ks, x2y)}
        out.update({f"{y2x_name}_recall@{k}{suffix}": float(r) for k, r in zip(self.ks, y2x)})
        return out


@EVALUATORS.register("retrieval")
def retrieval(c: ml_collections.ConfigDict, context: EvalContext) -> Retrieval:
    """Retrieval on `c.dataset` (synthetic, coco, flickr30k) at recall@`c.ks`, between
    `c.modalities`; a text modality second reads the dataset's captions."""
    c = with_defaults(c, DEFAULTS)
    x, y = tuple(c.modalities)
    data = context.config.data.modalities
    text = y in data and data[y].type == "text"
    source = require(build_dataset(c, context.config), "captions" if text else "__len__", c)
    tokenizer = context.tokenizer(y) if text else None
    return Retrieval(
        context.model,
        source,
        context.mesh,
        c.batch_size,
        c.ks,
        (x, y),
        tokenizer,
        c.dims,
        c.similarity,
    )
