"""Zero-shot classification: class embeddings from prompt templates, top-1 and top-5.

Each class embedding is the normalised mean of its normalised template embeddings
(Radford et al. 2021; CLIP_benchmark `zero_shot_classifier`); an image's prediction is
the class of highest cosine similarity, ties going to the lower class index
(`lax.top_k`). Images are evaluated in sharded global batches, the last one padded and
masked, so every example counts exactly once whatever the dataset size.

Entry fields: `dataset` and its fields (evals/datasets.py), `templates` (a name in
evals/templates.py; "" = the dataset's own: CLIP's 80 for ImageNet, its 18 for CIFAR,
"imagenet7" for the 7-template ensemble subset).
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
from mmjax.evals.templates import get_templates
from mmjax.parallel import sharding

DEFAULTS = dict(**COMMON_DEFAULTS, **DATASET_DEFAULTS, templates="")


class ZeroShot:
    """Zero-shot top-1/top-5 of a two-tower model on a labelled source."""

    def __init__(
        self,
        model: nn.Module,
        source: Any,
        class_names: Sequence[str],
        templates: Sequence[str],
        tokenizer: Tokenizer,
        mesh: Mesh,
        batch_size: int,
    ):
        self.source, self.mesh = source, mesh
        self.num_classes, self.num_templates = len(class_names), len(templates)
        self.batch_size = batch_size
        prompts = [t.format(name) for name in class_names for t in templates]
        self.tokens = np.stack([tokenizer(p) for p in prompts])
        self._embed_images = embed_images(model)
        self._prompts = Gatherer(embed_texts(model), mesh, ("tokens",))
        self._score = jax.jit(self._score_fn, out_shardings=sharding.replicated(mesh))

    def class_embeddings(self, params: Any) -> jax.Array:
        """[classes, d] on every device: each class's normalised mean prompt embedding.

        Prompts go through the text tower in batches (ImageNet's 80 templates make
        80,000 prompts), then the means are taken on the host.
        """
        prompts = ArraySource(tokens=self.tokens)
        emb = self._prompts(params, prompts, self.batch_size, "zero-shot: prompts")["emb"]
        emb = emb.reshape(self.num_classes, self.num_templates, -1).mean(axis=1)
        emb /= np.maximum(np.linalg.norm(emb, axis=1, keepdims=True), 1e-12)
        return replicated_rows(emb.astype(np.float32), self.mesh)

    def _score_fn(self, params: Any, classes: jax.Array, batch: dict) -> jax.Array:
        logits = self._embed_images(params, batch)["emb"] @ classes.T
        labels, mask = batch["label"], batch["mask"]
        top5 = jax.lax.top_k(logits, min(5, self.num_classes))[1]
        top1_ok = top5[:, 0] == labels
        top5_ok = jnp.any(top5 == labels[:, None], axis=-1)
        return jnp.stack([jnp.sum(top1_ok * mask), jnp.sum(top5_ok * mask), jnp.sum(mask)])

    def run(self, params: Any) -> dict[str, float]:
        classes = self.class_embeddings(params)
        totals = np.zeros(3)
        for batch in global_batches(self.source, self.batch_size, self.mesh, "zero-shot"):
            totals += np.asarray(self._score(params, classes, batch))
        return {"top1": float(totals[0] / totals[2]), "top5": float(totals[1] / totals[2])}


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
        context.tokenizer,
        context.mesh,
        c.batch_size,
    )
