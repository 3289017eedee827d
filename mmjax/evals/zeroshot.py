"""Zero-shot classification: class embeddings from prompt templates, top-1 and top-5.

Each class embedding is the normalised mean of its normalised template embeddings
(Radford et al. 2021). Images are evaluated in sharded global batches, the last one
padded and masked, so every example counts exactly once whatever the dataset size.
"""

from collections.abc import Sequence
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
from jax.sharding import Mesh

from mmjax.data.pipeline import eval_batches
from mmjax.data.tokenizers import Tokenizer
from mmjax.evals.datasets import build_dataset
from mmjax.evals.registry import EVALUATORS, EvalContext
from mmjax.evals.templates import TEMPLATES
from mmjax.models.towers import l2_normalize
from mmjax.parallel import sharding
from mmjax.train.step import normalize_images


def sharded_rows(rows: np.ndarray, mesh: Mesh) -> jax.Array:
    """A host array that every process holds whole -> a global array split over the batch.

    Rows are padded (repeating row 0) to a multiple of the device count.
    """
    n = mesh.devices.size
    pad = -len(rows) % n
    rows = np.concatenate([rows, np.repeat(rows[:1], pad, axis=0)]) if pad else rows
    return jax.make_array_from_callback(
        rows.shape, sharding.batch_sharding(mesh), lambda index: rows[index]
    )


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
        self.model, self.source, self.mesh = model, source, mesh
        self.num_classes, self.num_templates = len(class_names), len(templates)
        self.batch_size = batch_size
        prompts = [t.format(name) for name in class_names for t in templates]
        self.tokens = np.stack([tokenizer(p) for p in prompts])
        replicated = sharding.replicated(mesh)
        self._class_embeddings = jax.jit(self._class_embeddings_fn, out_shardings=replicated)
        self._score = jax.jit(self._score_fn, out_shardings=replicated)

    def _class_embeddings_fn(self, params: Any, tokens: jax.Array) -> jax.Array:
        emb = self.model.apply({"params": params}, tokens, method="encode_text")
        emb = emb[: self.num_classes * self.num_templates]
        emb = emb.reshape(self.num_classes, self.num_templates, -1).mean(axis=1)
        return l2_normalize(emb)

    def _score_fn(self, params: Any, classes: jax.Array, batch: dict, mask: jax.Array):
        emb = self.model.apply(
            {"params": params}, normalize_images(batch["image"]), method="encode_image"
        )
        logits = emb @ classes.T
        labels = batch["label"]
        top5 = jax.lax.top_k(logits, min(5, self.num_classes))[1]
        top1_ok = top5[:, 0] == labels
        top5_ok = jnp.any(top5 == labels[:, None], axis=-1)
        return jnp.stack([jnp.sum(top1_ok * mask), jnp.sum(top5_ok * mask), jnp.sum(mask)])

    def run(self, params: Any) -> dict[str, float]:
        classes = self._class_embeddings(params, sharded_rows(self.tokens, self.mesh))
        totals = np.zeros(3)
        for local, mask in eval_batches(
            self.source, self.batch_size, jax.process_index(), jax.process_count()
        ):
            batch = sharding.global_batch({**local, "mask": mask}, self.mesh)
            mask = batch.pop("mask")
            totals += np.asarray(self._score(params, classes, batch, mask))
        return {"top1": totals[0] / totals[2], "top5": totals[1] / totals[2]}


@EVALUATORS.register("zeroshot")
def zeroshot(c: ml_collections.ConfigDict, context: EvalContext) -> ZeroShot:
    """Zero-shot on `c.dataset` with the templates `c.templates` (default: the dataset's)."""
    source = build_dataset(c.dataset, context.config)
    return ZeroShot(
        context.model,
        source,
        source.class_names,
        TEMPLATES[c.templates or c.dataset],
        context.tokenizer,
        context.mesh,
        c.batch_size,
    )
