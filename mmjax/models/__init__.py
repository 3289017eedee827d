"""Towers by modality (registry: `config.model.towers.<modality>.type`) and the model."""

from mmjax.models import audio, text, timeseries, video, vit  # noqa: F401  (register tower types)
from mmjax.models.model import OBJECTIVES_KEY, Model, build_model, clamp_temperatures
from mmjax.models.registry import TOWERS, register_tower, tower_defaults
from mmjax.models.tower import Tokens, Tower, l2_normalize

__all__ = [
    "OBJECTIVES_KEY",
    "TOWERS",
    "Model",
    "Tokens",
    "Tower",
    "build_model",
    "clamp_temperatures",
    "l2_normalize",
    "register_tower",
    "tower_defaults",
]
