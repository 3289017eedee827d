"""Zero-shot classification of any modality against text prompts: top-1, top-5 and mean
per-class recall.

Each class embedding is the normalised mean of its normalised template embeddings
(Radford et al. 2021; CLIP_benchmark `zero_shot_classifier`); an example's prediction is
the class of highest cosine similarity, ties going to the lower class index
(`lax.top_k`). Examples are evaluated in sharded global batches, the last one padded and
masked, so every example counts exactly once whatever the dataset size. Mean per-class
recall is the mean over the classes present of the fraction of their examples predicted
right (CLIP_benchmark's `mean_per_class_recall`, scikit-learn's balanced accuracy).

Entry fields: `modality` (the tower whose embeddings are classified: "image", "audio",
...), `text` (the text modality whose tower embeds the prompts), `dataset` and its fields
(evals/datasets.py), `templates` (a name in evals/templates.py; "" = the dataset's own:
CLIP's 80 for ImageNet, its 18 for CIFAR, "imagenet7" for the 7-template subset).
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
from mmjax.evals.templates import get_templates
from mmjax.models import Model, l2_normalize
from mmjax.parallel import sharding

DEFAULTS = dict(
    **COMMON_DEFAULTS,
    **DATASET_DEFAULTS,
    templates="",
    modality="image",
    text="text",
    dims=(),  # Matryoshka: also report top-1 etc. of embeddings truncated to these sizes
)


class ZeroShot:
    """Zero-shot top-1/top-5/mean per-class recall of `modality` on a labelled source."""

    def __init__(
        self,
        model: Model,
        source: Any,
        class_names: Sequence[str],
        templates: Sequence[str],
        tokenizer: Tokenizer,
        mesh: Mesh,
        batch_size: int,
        modality: str = "image",
        text: str = "text",
        dims: Sequence[int] = (),
    ):
        """`dims`: also score truncated embeddings (Matryoshka prefixes), renormalised."""
        self.source, self.mesh = source, mesh
        self.dims = tuple(dims)
        self.num_classes, self.num_templates = len(class_names), len(templates)
        self.batch_size = batch_size
        prompts = [t.format(name) for name in class_names for t in templates]
        self.tokens = np.stack([tokenizer(p) for p in prompts])
        self._embed = embed_fn(model, modality)
        self._prompts = Gatherer(embed_fn(model, text, key="tokens"), mesh, ("tokens",))
        self._score = jax.jit(self._score_fn, out_shardings=sharding.replicated(mesh))

    def class_embeddings(self, params: Any) -> tuple[jax.Array, ...]:
        """[classes, d] on every device: each class's normalised mean prompt embedding,
        then one [classes, m] for each prefix m of `dims` (prompts truncated first).

        Prompts go through the text tower in batches (ImageNet's 80 templates make
        80,000 prompts), then the means are taken on the host.
        """
        prompts = ArraySource(tokens=self.tokens)
        emb = self._prompts(params, prompts, self.batch_size, "zero-shot: prompts")["emb"]
        out = []
        for m in (emb.shape[-1], *self.dims):
            part = unit_rows(emb[:, :m]).reshape(self.num_classes, self.num_templates, m)
            out.append(replicated_rows(unit_rows(part.mean(axis=1)), self.mesh))
        return tuple(out)

    def _score_fn(self, params: Any, classes: tuple[jax.Array, ...], batch: dict) -> jax.Array:
        """[prefixes, 3, classes]: per true class, top-1 hits, top-5 hits and examples."""
        emb = self._embed(params, batch)["emb"]
        labels, mask = batch["label"], batch["mask"]
        per_class = jax.nn.one_hot(labels, self.num_classes) * mask[:, None]
        counts = []
        for c in classes:
            logits = l2_normalize(emb[:, : c.shape[-1]]) @ c.T
            top5 = jax.lax.top_k(logits, min(5, self.num_classes))[1]
            top1_ok = top5[:, 0] == labels
            top5_ok = jnp.any(top5 == labels[:, None], axis=-1)
            hits = jnp.stack([top1_ok, top5_ok, jnp.ones_like(top1_ok)]).astype(jnp.float32)
            counts.append(hits @ per_class)
        return jnp.stack(counts)

    def run(self, params: Any) -> dict[str, float]:
        classes = self.class_embeddings(params)
        counts = np.zeros((len(classes), 3, self.num_classes))
        for batch in global_batches(self.source, self.batch_size, self.mesh, "zero-shot"):
            counts += np.asarray(self._score(params, classes, batch))
        out = {}
        for suffix, c in zip(["", *(f"@dim{m}" for m in self.dims)], counts):
            hits1, hits5, n = c.sum(axis=1)
            present = c[2] > 0
            out[f"top1{suffix}"] = float(hits1 / n)
            out[f"top5{suffix}"] = float(hits5 / n)
            out[f"mean_per_class_recall{suffix}"] = float(np.mean(c[0][present] / c[2][present]))
        return out


@EVALUATORS.register("zeroshot")
def zeroshot(c: ml_collections.ConfigDict, context: EvalContext) -> ZeroShot:
    """Zero-shot on `c.dataset` with the templates `c.templates` (default: the dataset's)."""
    c = with_defaults(c, DEFAULTS)
    source = require(build_dataset(c, context.config), "class_names", c)
    return ZeroShot(
        context.model,
        source,
        source.class_names,
        get_templates(c.templates or source.templates),
        context.tokenizer(c.text),
        context.mesh,
        c.batch_size,
        c.modality,
        c.text,
        c.dims,
    )
