"""`config.data.source` -> a source of raw records (dicts of fields).

Random-access sources (synthetic, arrayrecord, tfds) have `__len__` and `__getitem__`;
streaming sources (wds) have `stream(...)` -> `grain.IterDataset`. pipeline.py turns
either into batches. Real sources serve the training data; evaluation datasets have
their own registry (evals/datasets.py).
"""

import logging

import ml_collections

from mmjax.data.synthetic import SyntheticSource
from mmjax.registry import Registry

SOURCES = Registry("data source")


@SOURCES.register("synthetic")
def synthetic(config: ml_collections.ConfigDict, split: str, seed: int) -> SyntheticSource:
    c = config.synthetic
    size = c.num_train if split == "train" else c.num_eval
    return SyntheticSource(split, size, synthetic_image_size(config), seed, c.captions)


def synthetic_image_size(config: ml_collections.ConfigDict) -> int:
    """The synthetic images' size: that of the data config's image modality (else 32)."""
    sizes = [m.size for m in config.modalities.values() if m.type == "image"]
    return sizes[0] if sizes else 32


def _train_only(split: str, name: str) -> None:
    if split != "train":
        raise ValueError(f"Source {name!r} serves the training split only, not {split!r}.")


@SOURCES.register("wds")
def webdataset(config: ml_collections.ConfigDict, split: str, seed: int):
    from mmjax.data import wds

    _train_only(split, "wds")
    return wds.build(config)


@SOURCES.register("arrayrecord")
def arrayrecord(config: ml_collections.ConfigDict, split: str, seed: int):
    from mmjax.data import arrayrecord

    _train_only(split, "arrayrecord")
    return arrayrecord.build(config)


@SOURCES.register("tfds")
def tfds(config: ml_collections.ConfigDict, split: str, seed: int):
    from mmjax.data import tfds

    _train_only(split, "tfds")
    return tfds.build(config)


def source_name(config: ml_collections.ConfigDict) -> str:
    """The source to use: the configured one, or synthetic when no data path is set."""
    if config.source != "synthetic" and not config.path:
        logging.warning(
            "config.data.path is empty, so training uses the built-in SYNTHETIC source, not"
            " %r. Set --config.data.path=... to train on real data.",
            config.source,
        )
        return "synthetic"
    return config.source


def build_source(config: ml_collections.ConfigDict, split: str, seed: int):
    """The source for `split` ("train" or "eval") named by `config` (the data config)."""
    return SOURCES.get(source_name(config))(config, split, seed)
