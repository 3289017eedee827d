"""Evaluation datasets by name: labelled image sources with their class names."""

import ml_collections

from mmjax.data.synthetic import SyntheticSource
from mmjax.registry import Registry

EVAL_DATASETS = Registry("evaluation dataset")


@EVAL_DATASETS.register("synthetic")
def synthetic(config: ml_collections.ConfigDict) -> SyntheticSource:
    """The held-out split of the built-in source, at the run's image size."""
    c = config.data
    return SyntheticSource("eval", c.synthetic.num_eval, c.image_size, config.seed)


def build_dataset(name: str, config: ml_collections.ConfigDict):
    """A source with `class_names`, `__len__` and `__getitem__` -> {"image", "label"}."""
    return EVAL_DATASETS.get(name)(config)
