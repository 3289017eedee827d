"""`config.model.name` -> a function that builds a Flax module from the model config."""

import flax.linen as nn
import ml_collections

from mmjax.registry import Registry

MODELS = Registry("model")


def build_model(config: ml_collections.ConfigDict) -> nn.Module:
    """Builds the model named by `config.name`."""
    return MODELS.get(config.name)(config)
