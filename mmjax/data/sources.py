"""`config.data.source` -> a random-access source of {"image", "text", ...} examples."""

import logging

import ml_collections

from mmjax.data.synthetic import SyntheticSource
from mmjax.registry import Registry

SOURCES = Registry("data source")


@SOURCES.register("synthetic")
def synthetic(config: ml_collections.ConfigDict, split: str, seed: int) -> SyntheticSource:
    c = config.synthetic
    size = c.num_train if split == "train" else c.num_eval
    return SyntheticSource(split, size, config.image_size, seed)


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
