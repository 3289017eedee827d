"""Synthetic source, tokenizer and Grain pipeline: determinism, sharding, exact resume."""

import zlib

import ml_collections
import numpy as np
import pytest

from mmjax.data import modalities, pipeline, synthetic, tokenizers
from mmjax.data.examples import Prepare
from mmjax.data.synthetic import COLOURS, SHAPES, SyntheticSource
from mmjax.evals import templates
from tests.helpers import tiny_config

TEXT = ml_collections.ConfigDict(dict(vocab_size=1000, context_length=10))


def test_source_is_a_pure_function_of_index():
    a, b = SyntheticSource("train", 100, 32, 0), SyntheticSource("train", 100, 32, 0)
    for i in (0, 7, 99):
        np.testing.assert_array_equal(a[i]["image"], b[i]["image"])
        assert a[i]["text"] == b[i]["text"]
    held_out = SyntheticSource("eval", 100, 32, 0)
    assert not np.array_equal(a[0]["image"], held_out[0]["image"])
    with pytest.raises(IndexError):
        a[100]


def test_source_covers_all_classes_and_captions_match_labels():
    src = SyntheticSource("train", 2000, 32, 0)
    labels = set()
    for i in range(0, 2000, 4):
        ex = src[i]
        name = src.class_names[int(ex["label"])]
        colour, shape = name.split(" ")
        assert colour in ex["text"] and shape in ex["text"], (name, ex["text"])
        labels.add(int(ex["label"]))
    assert len(labels) == len(SHAPES) * len(COLOURS) >= 25


def test_image_shows_the_labelled_colour():
    src = SyntheticSource("eval", 50, 64, 0)
    palette = np.array(list(COLOURS.values()), float)
    for i in range(50):
        ex = src[i]
        pixels = ex["image"].reshape(-1, 3).astype(float)
        # Shape pixels are far from grey; the background is grey (R = G = B up to noise).
        coloured = pixels[np.ptp(pixels, axis=1) > 60]
        assert len(coloured) > 10
        nearest = np.argmin(((coloured[:, None] - palette[None]) ** 2).sum(-1), axis=1)
        colour = np.bincount(nearest, minlength=len(palette)).argmax()
        assert src.class_names[int(ex["label"])].startswith(list(COLOURS)[colour])


def test_zero_shot_prompts_are_not_training_templates():
    for prompt in templates.SYNTHETIC:
        filled = prompt.format("red circle")
        for t in synthetic.TRAIN_TEMPLATES:
            caption = t.format(shape="circle", colour="red", size="small", position="top")
            assert filled.rstrip(".") != caption


def test_simple_tokenizer_layout():
    tok = tokenizers.build_tokenizer("simple", TEXT)
    ids = tok("A red, Circle")
    v = TEXT.vocab_size
    words = ["a", "red", ",", "circle"]
    expected = [v - 2] + [1 + zlib.crc32(w.encode()) % (v - 3) for w in words] + [v - 1]
    np.testing.assert_array_equal(ids[:6], expected)
    np.testing.assert_array_equal(ids[6:], 0)
    assert ids.argmax() == 5  # the end token has the largest id (CLIP argmax pooling)
    long = tok(" ".join(["word"] * 50))
    assert long.shape == (10,) and long[-1] == v - 1 and long[0] == v - 2
    empty = tok("")
    np.testing.assert_array_equal(empty[:3], [v - 2, v - 1, 0])


def _examples(batch: dict) -> set[tuple]:
    return {(img.tobytes(), tok.tobytes()) for img, tok in zip(batch["image"], batch["text"])}


def _prepare(size: int) -> Prepare:
    """Images as they come (the synthetic source draws them at `size`), simple tokens."""
    config = tiny_config(**{"data.modalities.image.size": size})
    with config.unlocked():
        config.model.towers.text.vocab_size = TEXT.vocab_size
        config.model.towers.text.context_length = TEXT.context_length
    return Prepare(modalities.build_readers(config))


def test_process_batches_union_is_the_global_batch():
    src = SyntheticSource("train", 1000, 8, 0)
    prep = _prepare(8)
    single = pipeline.train_dataset(src, prep, 16, 3, 0, 1)
    parts = [pipeline.train_dataset(src, prep, 16, 3, p, 4) for p in range(4)]
    for k in (0, 5):
        union = set().union(*(_examples(part[k]) for part in parts))
        assert len(union) == 16
        assert union == _examples(single[k])
    # Different processes never read the same example.
    assert not _examples(parts[0][0]) & _examples(parts[1][0])


def test_iterator_state_resumes_exactly():
    src = SyntheticSource("train", 50, 8, 0)  # small: the run crosses epochs
    prep = _prepare(8)
    options = ml_collections.ConfigDict(dict(num_threads=2, prefetch=2))
    it = pipeline.as_iterator(pipeline.train_dataset(src, prep, 8, 0, 0, 1), options)
    for _ in range(5):
        next(it)
    saved = it.get_state()
    expected = [next(it) for _ in range(4)]
    fresh = pipeline.as_iterator(pipeline.train_dataset(src, prep, 8, 0, 0, 1), options)
    fresh.set_state(saved)
    for want in expected:
        got = next(fresh)
        np.testing.assert_array_equal(got["image"], want["image"])
        np.testing.assert_array_equal(got["text"], want["text"])


class _Indexed:
    def __len__(self):
        return 37

    def __getitem__(self, i):
        return {"label": np.int32(i), "text": "x"}


@pytest.mark.parametrize("processes", [1, 2, 4])
def test_eval_batches_count_every_example_once(processes):
    seen = []
    for p in range(processes):
        for batch, mask in pipeline.eval_batches(_Indexed(), 8, p, processes):
            assert len(batch["label"]) == 8 // processes
            seen.extend(batch["label"][mask > 0].tolist())
    assert sorted(seen) == list(range(37))
