"""Logical axis names -> mesh shardings, and global batches from per-process data."""

from collections.abc import Sequence
from typing import Any

import flax.linen as nn
import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from mmjax.parallel.mesh import BATCH_AXES

Rules = Sequence[tuple[str, Any]]


def as_rules(rules: Sequence[Sequence[Any]]) -> tuple[tuple[str, Any], ...]:
    """Config rules (lists after a round trip through JSON) -> Flax's tuple form."""
    return tuple((name, tuple(a) if isinstance(a, list) else a) for name, a in rules)


def logical_shardings(abstract_boxed: Any, mesh: Mesh, rules: Rules) -> Any:
    """Shardings for a pytree whose leaves carry logical axis names (or none: replicated)."""
    specs = nn.get_partition_spec(abstract_boxed)
    return nn.logical_to_mesh_sharding(specs, mesh, as_rules(rules))


def batch_sharding(mesh: Mesh) -> NamedSharding:
    """Leading axis over the batch mesh axes, the rest replicated."""
    return NamedSharding(mesh, PartitionSpec(BATCH_AXES))


def replicated(mesh: Mesh) -> NamedSharding:
    return NamedSharding(mesh, PartitionSpec())


def global_batch(local: dict[str, np.ndarray], mesh: Mesh) -> dict[str, jax.Array]:
    """Per-process numpy arrays -> global arrays sharded over the batch axes."""
    sharding = batch_sharding(mesh)
    return {
        k: jax.make_array_from_process_local_data(sharding, np.asarray(v)) for k, v in local.items()
    }
