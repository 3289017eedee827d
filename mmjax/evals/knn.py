"""Weighted k-nearest-neighbour classification of frozen image features.

The classifier of Wu et al. (2018) as in DINO's eval_knn.py (Caron et al. 2021):
features are L2-normalised; each test image takes its k = 20 most cosine-similar
training images, each voting for its label with weight exp(similarity / 0.07); the
class with most weight is the prediction (top-1), the five heaviest make top-5.
Neighbour ties go to the lower training index (`lax.top_k`), vote ties to the lower
class.

The training features (the "memory bank") are replicated on every device:
n_train x d float32 each (ImageNet at width 768: 3.9 GB). Test images go in sharded,
padded and masked batches.
"""

from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
from jax.sharding import Mesh

from mmjax.evals.batches import ArraySource, global_batches, replicated_rows
from mmjax.evals.datasets import DATASET_DEFAULTS, build_dataset, require
from mmjax.evals.features import Features
from mmjax.evals.registry import COMMON_DEFAULTS, EVALUATORS, EvalContext, with_defaults
from mmjax.models import l2_normalize
from mmjax.parallel import sharding

DEFAULTS = dict(
    **COMMON_DEFAULTS,
    **DATASET_DEFAULTS,
    train_split="train",
    features="backbone",
    modality="image",  # whose tower's features are classified
    k=20,
    temperature=0.07,
)


def knn_class_weights(
    queries: jax.Array,
    bank: jax.Array,
    bank_labels: jax.Array,
    num_classes: int,
    k: int,
    temperature: float,
) -> jax.Array:
    """[queries, classes] summed vote weights; queries and bank already normalised."""
    sims, idx = jax.lax.top_k(queries @ bank.T, min(k, bank.shape[0]))
    votes = jax.nn.one_hot(bank_labels[idx], num_classes, dtype=jnp.float32)
    return jnp.einsum("qk,qkc->qc", jnp.exp(sims / temperature), votes)


class KNNScorer:
    """Top-1/top-5 of test features against a memory bank; compiled once per bank shape."""

    def __init__(self, mesh: Mesh, num_classes: int, k: int, temperature: float, batch_size: int):
        self.mesh, self.batch_size = mesh, batch_size
        self.top = min(5, num_classes)

        def correct(bank, bank_labels, batch):
            q = l2_normalize(batch["features"])
            weights = knn_class_weights(q, bank, bank_labels, num_classes, k, temperature)
            hits = jax.lax.top_k(weights, self.top)[1] == batch["label"][:, None]
            m = batch["mask"]
            return jnp.stack([jnp.sum(hits[:, 0] * m), jnp.sum(jnp.any(hits, axis=1) * m)])

        self._correct = jax.jit(correct, out_shardings=sharding.replicated(mesh))

    def __call__(
        self, bank: np.ndarray, bank_labels: np.ndarray, test: np.ndarray, labels: np.ndarray
    ) -> dict[str, float]:
        bank = bank / np.maximum(np.linalg.norm(bank, axis=1, keepdims=True), 1e-12)
        bank_dev = replicated_rows(bank.astype(np.float32), self.mesh)
        labels_dev = replicated_rows(bank_labels.astype(np.int32), self.mesh)
        queries = ArraySource(features=test.astype(np.float32), label=labels.astype(np.int32))
        total = np.zeros(2)
        for batch in global_batches(queries, self.batch_size, self.mesh, "knn: scoring"):
            total += np.asarray(self._correct(bank_dev, labels_dev, batch))
        return {"top1": float(total[0] / len(test)), f"top{self.top}": float(total[1] / len(test))}


class KNN:
    """kNN top-1/top-5 of frozen image features: train split as memory, test split scored."""

    def __init__(self, model: nn.Module, train: Any, test: Any, mesh: Mesh, c):
        self.train, self.test = train, test
        self.features = Features(model, mesh, c.modality, c.features, c.batch_size)
        self.scorer = KNNScorer(mesh, len(test.class_names), c.k, c.temperature, c.batch_size)

    def run(self, params: Any) -> dict[str, float]:
        bank, bank_labels = self.features(params, self.train, "knn: train features")
        test, test_labels = self.features(params, self.test, "knn: test features")
        return self.scorer(bank, bank_labels, test, test_labels)


@EVALUATORS.register("knn")
def knn(c: ml_collections.ConfigDict, context: EvalContext) -> KNN:
    """kNN on `c.dataset`: memory from `c.train_split`, scored on `c.split`."""
    c = with_defaults(c, DEFAULTS)
    train = require(build_dataset(c, context.config, c.train_split), "class_names", c)
    test = require(build_dataset(c, context.config), "class_names", c)
    return KNN(context.model, train, test, context.mesh, c)
