"""Evaluation datasets by name (`dataset` in an evaluator entry).

A *labelled* dataset (zero-shot, linear probe, kNN) has `class_names`, `templates` (the
name of its default prompt list in evals/templates.py), `__len__` and `__getitem__ ->
{"image", "label"}`. A *captioned* dataset (retrieval) has `__len__`, `__getitem__ ->
{"image"}` and `captions`, one list of strings per image. Images are uint8 [size, size,
3] at the run's image size.

Registered here: "synthetic" (labelled and captioned). Elsewhere: "imagefolder"
(image_folder.py); "imagenet2012", "imagenet_v2", "cifar10", "cifar100" and any TFDS
dataset as "tfds:NAME" (tfds_source.py); "coco" and "flickr30k" from Karpathy-split JSON
(karpathy.py).
"""

import dataclasses
import functools
from typing import Any

import ml_collections
import numpy as np

from mmjax.data import modalities, sources
from mmjax.data.examples import Prepare
from mmjax.data.skipped import Skipped
from mmjax.data.synthetic import SyntheticSource
from mmjax.registry import Registry

EVAL_DATASETS = Registry("evaluation dataset")

# The dataset fields of an evaluator entry, with their defaults.
DATASET_DEFAULTS = dict(
    dataset="synthetic",
    split="",  # "": the dataset's evaluation split
    path="",  # image-folder root, or Karpathy JSON file
    image_dir="",  # Karpathy: the directory that the JSON's image paths start from
    data_dir="",  # TFDS data_dir; "": TFDS's default
    image_key="image",  # TFDS feature names
    label_key="label",
    class_names="",  # "": the dataset's own; else a shipped list (evals/classnames.py)
    captions_per_image=5,  # synthetic retrieval (COCO has about five per image)
)


class SyntheticEval:
    """The synthetic source as an evaluation dataset: labels, several captions each, and
    every non-text modality of the run, read as evaluation reads them (centre crops)."""

    templates = "synthetic"

    def __init__(self, source: Any, captions_per_image: int, readers: dict | None = None):
        self.source, self.captions_per_image = source, captions_per_image
        self.class_names = source.class_names
        self.prepare = Prepare(readers) if readers else None

    def __len__(self) -> int:
        return len(self.source)

    def __getitem__(self, index: int) -> dict[str, np.ndarray]:
        example = self.source[index]
        if self.prepare is None:
            return {"image": example["image"], "label": example["label"]}
        out = self.prepare(example, np.random.default_rng(index))
        if isinstance(out, Skipped):  # the synthetic source never makes bad records
            raise RuntimeError(f"Synthetic evaluation example {index} was skipped: {out}.")
        return {**out, "label": example["label"]}

    @functools.cached_property
    def captions(self) -> list[list[str]]:
        return [self.source.captions(i, self.captions_per_image) for i in range(len(self))]


@EVAL_DATASETS.register("synthetic")
def synthetic(
    entry: ml_collections.ConfigDict, config: ml_collections.ConfigDict, split: str
) -> SyntheticEval:
    """`split` "eval" (default, held out from training) or "train": the run's synthetic
    source (image and text, or every modality it reads) with `num_eval` examples."""
    source = sources.synthetic(config.data, "eval", config.seed)
    if split and split != "eval":
        source = dataclasses.replace(source, split=split)
    if isinstance(source, SyntheticSource):
        return SyntheticEval(source, entry.captions_per_image)
    readers = modalities.build_readers(config, train=False)
    kept = {m: r for m, r in readers.items() if config.data.modalities[m].type != "text"}
    return SyntheticEval(source, entry.captions_per_image, kept)


def build_dataset(
    entry: ml_collections.ConfigDict, config: ml_collections.ConfigDict, split: str | None = None
) -> Any:
    """The dataset of `entry` at the run's image size: its split, or `split` when given.

    `entry.dataset` is a registered name, or "tfds:NAME" for any TFDS dataset.
    """
    name = entry.dataset.partition(":")[0]
    return EVAL_DATASETS.get(name)(entry, config, entry.split if split is None else split)


def require(source: Any, attribute: str, entry: ml_collections.ConfigDict) -> Any:
    """`source`, after checking it has what the evaluator needs (labels or captions)."""
    if not hasattr(source, attribute):
        kind = "class labels" if attribute == "class_names" else attribute
        raise ValueError(
            f"Dataset {entry.dataset!r} has no {kind}, which evaluator type {entry.type!r} needs."
        )
    return source
