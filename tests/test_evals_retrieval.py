"""Retrieval recall@k equals a brute-force numpy count, ties and uneven captions included."""

import json

import jax
import ml_collections
import numpy as np
import pytest
from PIL import Image

from mmjax.data.synthetic import SyntheticSource
from mmjax.evals.datasets import DATASET_DEFAULTS, build_dataset
from mmjax.evals.retrieval import Recalls
from mmjax.parallel.mesh import make_mesh
from tests.helpers import tiny_config

KS = (1, 5, 10)


def reference_recalls(image, text, owner, ks):
    """CLIP_benchmark's counting, by brute force in float64.

    Every query ranks the whole gallery by score, equal scores in gallery order (a
    stable sort), and retrieves the first k. Image->text: a hit if any of the image's
    captions is retrieved. Text->image: a hit if the caption's image is retrieved.
    """
    scores = image.astype(np.float64) @ text.astype(np.float64).T  # [images, texts]
    i2t, t2i = np.zeros(len(ks)), np.zeros(len(ks))
    for i in range(len(image)):
        order = np.argsort(-scores[i], kind="stable")
        for j, k in enumerate(ks):
            i2t[j] += np.any(owner[order[:k]] == i)
    for t in range(len(text)):
        order = np.argsort(-scores[:, t], kind="stable")
        for j, k in enumerate(ks):
            t2i[j] += owner[t] in order[:k]
    return i2t / len(image), t2i / len(text)


def tied_embeddings(rng, n_images):
    """Small-integer embeddings: exact float32 dot products with many equal scores.

    Captions are their image's row plus small integer noise, and some repeat an
    earlier one verbatim, so top-k boundaries fall inside runs of equal scores.
    """
    counts = rng.integers(1, 8, n_images)  # 1 to 7 captions per image
    owner = np.repeat(np.arange(n_images), counts)
    image = rng.integers(-2, 3, (n_images, 4)).astype(np.float32)
    text = image[owner] + rng.integers(-2, 3, (len(owner), 4)).astype(np.float32)
    copies = rng.random(len(owner)) < 0.2
    text[copies] = text[rng.integers(0, len(owner), copies.sum())]
    return image, text, owner


@pytest.mark.parametrize("seed, n_images", [(0, 37), (1, 130)])
def test_recalls_equal_brute_force_reference_with_ties(seed, n_images):
    rng = np.random.default_rng(seed)
    image, text, owner = tied_embeddings(rng, n_images)
    scores = image @ text.T
    ties = sum(len(np.unique(row)) < len(row) for row in scores)
    assert ties == n_images  # every image ranks some captions equal

    recalls = Recalls(make_mesh(tiny_config().mesh), KS, batch_size=24)
    i2t = recalls({"emb": image}, np.arange(n_images), {"emb": text}, owner, "i2t")
    t2i = recalls({"emb": text}, owner, {"emb": image}, np.arange(n_images), "t2i")
    want_i2t, want_t2i = reference_recalls(image, text, owner, KS)
    np.testing.assert_array_equal(i2t, want_i2t)
    np.testing.assert_array_equal(t2i, want_t2i)
    assert 0 < want_i2t[0] < want_i2t[-1] < 1  # the example is neither trivial nor hopeless
    # Ties decide hits here: counting every item tied with the k-th as retrieved differs.
    kth = -np.sort(-scores.astype(np.float64), axis=1)[:, 0]
    own = np.array([scores[i, owner == i].max() for i in range(n_images)])
    assert np.mean(own >= kth) > want_i2t[0]


def test_tied_gallery_items_go_to_the_earlier_one():
    """A caption tied with a better-placed one is not counted at k=1 (no optimism)."""
    image = np.array([[1.0, 0.0], [0.0, 1.0]], np.float32)
    text = np.array([[1.0, 0.0], [1.0, 0.0], [0.0, 1.0]], np.float32)  # 0 and 1 tie
    owner = np.array([1, 0, 1])  # caption 0 belongs to image 1, caption 1 to image 0
    recalls = Recalls(make_mesh(tiny_config().mesh), (1, 2), batch_size=8)
    i2t = recalls({"emb": image}, np.arange(2), {"emb": text}, owner, "i2t")
    # Image 0 ranks captions 0 and 1 equal: caption 0 (image 1's) is retrieved first.
    np.testing.assert_array_equal(i2t, [0.5, 1.0])


def test_token_wise_recalls_equal_a_brute_force_late_interaction():
    """FILIP's similarity (mean over a query's real tokens of its best match among the
    item's real tokens), counted by brute force in float64, padding tokens masked."""
    rng = np.random.default_rng(3)
    n_images, n_tokens, d = 20, 5, 6
    owner = np.repeat(np.arange(n_images), 2)
    image = rng.normal(size=(n_images, n_tokens, d)).astype(np.float32)
    text = image[owner][:, :4] + 0.8 * rng.normal(size=(len(owner), 4, d)).astype(np.float32)
    image_mask = rng.random((n_images, n_tokens)) < 0.8
    image_mask[:, 0] = True
    text_mask = rng.random((len(owner), 4)) < 0.7
    text_mask[:, 0] = True

    def late(q, qm, g, gm):  # [q, g] in float64
        s = np.einsum("qad,gbd->qgab", q.astype(np.float64), g.astype(np.float64))
        best = np.where(gm[None, :, None, :], s, -np.inf).max(-1)
        return (best * qm[:, None, :]).sum(-1) / qm.sum(-1)[:, None]

    def brute(scores, q_owner, g_owner):
        hits = np.zeros(2)
        for i, row in enumerate(scores):
            order = np.argsort(-row, kind="stable")
            hits += [np.any(g_owner[order[:k]] == q_owner[i]) for k in (1, 3)]
        return hits / len(scores)

    recalls = Recalls(make_mesh(tiny_config().mesh), (1, 3), batch_size=8, similarity="tokens")
    images = {"emb": image, "emb_mask": image_mask}
    texts = {"emb": text, "emb_mask": text_mask}
    i2t = recalls(images, np.arange(n_images), texts, owner, "i2t")
    t2i = recalls(texts, owner, images, np.arange(n_images), "t2i")
    want_i2t = brute(late(image, image_mask, text, text_mask), np.arange(n_images), owner)
    want_t2i = brute(late(text, text_mask, image, image_mask), owner, np.arange(n_images))
    np.testing.assert_allclose(i2t, want_i2t)
    np.testing.assert_allclose(t2i, want_t2i)
    assert 0 < want_i2t[0] < 1 and 0 < want_t2i[0] < 1


def test_synthetic_captions_describe_their_image_deterministically():
    src = SyntheticSource("eval", 20, 16, 0)
    for i in range(20):
        caps = src.captions(i, 5)
        assert caps[0] == src[i]["text"] and len(set(caps)) == 5
        colour, shape = src.class_names[int(src[i]["label"])].split()
        assert all(colour in c and shape in c for c in caps)
        assert caps == SyntheticSource("eval", 20, 16, 0).captions(i, 5)


def test_karpathy_json_gives_the_test_split_with_all_captions(tmp_path):
    rng = np.random.default_rng(0)
    images = []
    for i, split in enumerate(["train", "test", "restval", "test"]):
        (tmp_path / "val2014").mkdir(exist_ok=True)
        name = f"im{i}.png"
        Image.fromarray(rng.integers(0, 255, (20 + i, 30, 3), dtype=np.uint8)).save(
            tmp_path / "val2014" / name
        )
        sentences = [{"raw": f" caption {i}.{j} ", "tokens": []} for j in range(5 + i % 2)]
        images.append(
            dict(filepath="val2014", filename=name, split=split, sentences=sentences, imgid=i)
        )
    path = tmp_path / "dataset_coco.json"
    path.write_text(json.dumps({"images": images, "dataset": "coco"}))
    entry = ml_collections.ConfigDict(
        dict(DATASET_DEFAULTS, dataset="coco", path=str(path), image_dir=str(tmp_path))
    )
    config = tiny_config()
    ds = build_dataset(entry, config)
    assert len(ds) == 2
    assert ds.captions == [
        [f"caption 1.{j}" for j in range(6)],
        [f"caption 3.{j}" for j in range(6)],
    ]
    assert ds[1]["image"].shape == (16, 16, 3) and ds[1]["image"].dtype == np.uint8
    assert not np.array_equal(ds[0]["image"], ds[1]["image"])
    assert jax.device_count() == 8
