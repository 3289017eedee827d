"""Zero-shot as CLIP_benchmark counts it: top-1, top-5 and mean per-class recall, against
an independent float64 numpy implementation from the model's own embeddings, on an
imbalanced set where mean per-class recall and top-1 differ."""

import flax.linen as nn
import jax
import numpy as np

from mmjax import state as state_lib
from mmjax.data.tokenizers import SimpleTokenizer
from mmjax.evals.batches import ArraySource
from mmjax.evals.zeroshot import ZeroShot
from mmjax.parallel import sharding
from mmjax.parallel.mesh import make_mesh
from tests.helpers import tiny_config
from tests.test_evals_devices import random_params

CLASSES = [f"thing{i}" for i in range(7)]
TEMPLATES = ["a photo of a {}.", "a {} in a picture.", "{}"]


def reference(image_emb, prompt_emb, labels) -> dict[str, float]:
    """CLIP_benchmark's zero-shot metrics from embeddings, in float64."""
    x = np.asarray(image_emb, np.float64)
    t = np.asarray(prompt_emb, np.float64).reshape(len(CLASSES), len(TEMPLATES), -1)
    t /= np.linalg.norm(t, axis=-1, keepdims=True)
    classes = t.mean(axis=1)
    classes /= np.linalg.norm(classes, axis=-1, keepdims=True)
    logits = x @ classes.T
    ranked = np.argsort(-logits, axis=1, kind="stable")
    top1 = ranked[:, 0] == labels
    top5 = (ranked[:, :5] == labels[:, None]).any(axis=1)
    recalls = [top1[labels == c].mean() for c in np.unique(labels)]
    return {"top1": top1.mean(), "top5": top5.mean(), "mean_per_class_recall": np.mean(recalls)}


def test_zeroshot_metrics_equal_numpy_from_embeddings():
    config = tiny_config()
    mesh = make_mesh(config.mesh)
    rng = np.random.default_rng(3)
    # 203 images (not a multiple of the batch: the last batch is padded), classes very
    # unequal in size, so that recall averaged per class is not the overall accuracy.
    labels = rng.choice(len(CLASSES), 203, p=[0.4, 0.25, 0.15, 0.1, 0.05, 0.03, 0.02])
    images = rng.integers(0, 256, (203, 16, 16, 3), dtype=np.uint8)
    tokenizer = SimpleTokenizer(128, 12)
    with jax.set_mesh(mesh), nn.logical_axis_rules(sharding.as_rules(config.mesh.rules)):
        built = state_lib.build(config, mesh)
        params = random_params(built.abstract.params, mesh)
        source = ArraySource(image=images, label=labels.astype(np.int32))
        zs = ZeroShot(built.model, source, CLASSES, TEMPLATES, tokenizer, mesh, 64)
        got = zs.run(params)
        embed = jax.jit(built.model.apply, static_argnames=("method",), static_argnums=1)
        x = embed({"params": params}, "image", images, method="embed")
        prompts = np.stack([tokenizer(t.format(c)) for c in CLASSES for t in TEMPLATES])
        t = embed({"params": params}, "text", prompts, method="embed")
    want = reference(np.asarray(x), np.asarray(t), labels)
    assert abs(want["top1"] - want["mean_per_class_recall"]) > 0.02, want  # they differ here
    for k, v in want.items():
        np.testing.assert_allclose(got[k], v, rtol=1e-6, err_msg=k)
