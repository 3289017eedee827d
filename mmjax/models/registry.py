"""Tower types by name: `config.model.towers.<modality>.type` -> how to build that tower.

A tower type is a function `build(tower_config, model_config) -> TowerSpec` registered
with the defaults of its own config fields. Adding a modality is one stem module and one
registered builder; the model, the step and the loop never name a modality.
"""

import dataclasses
from collections.abc import Callable
from typing import Any

import flax.linen as nn
import ml_collections

from mmjax.registry import Registry

TOWERS = Registry("tower type")

# Fields every tower config has, whatever its type.
COMMON_DEFAULTS = dict(
    type="",
    share="",  # another modality's name: use that tower's parameters (augmented views)
    dtype="",  # activations; "" = model.dtype
    remat="",  # "" = model.remat; see layers.REMAT_POLICIES
    # Training only: the fraction of tokens each example drops after the stem (FLIP), and
    # the step from which it keeps them all (unmasked tuning; 0 = drop for the whole run).
    token_drop=0.0,
    token_drop_until=0,
    lock=False,  # LiT: no gradient, no optimizer state, no weight decay for this tower
)


@dataclasses.dataclass(frozen=True)
class TowerType:
    build: Callable[[ml_collections.ConfigDict, ml_collections.ConfigDict], nn.Module]
    defaults: dict[str, Any]


def register_tower(name: str, **defaults: Any) -> Callable:
    """Registers `build(tower_config, model_config) -> Tower` with its config defaults."""

    def decorator(build: Callable) -> Callable:
        TOWERS.register(name)(TowerType(build, {**COMMON_DEFAULTS, "type": name, **defaults}))
        return build

    return decorator


def tower_defaults(name: str) -> dict[str, Any]:
    """Every field of a tower config of type `name`, with its default."""
    return dict(TOWERS.get(name).defaults)
