"""A saved config (`config.json`, as a dict) back into a ConfigDict of today's fields."""

from collections.abc import Mapping
from typing import Any

import ml_collections

from mmjax import config as config_lib

# Sections of named entries, each made from its registered type with that type's fields
# (towers, data modalities, objective terms) before the saved values are set.
TYPED = {
    ("model", "towers"): lambda e: config_lib.tower(e["type"]),
    ("data", "modalities"): lambda e: config_lib.modality(e["type"]),
    ("objectives",): lambda e: config_lib.objective(e["loss"], tuple(e["modalities"])),
}


def like(default: Any, value: Any) -> Any:
    """JSON lists back to the tuples the defaults use (e.g. mesh.rules)."""
    if isinstance(default, tuple) and isinstance(value, list):
        return tuple(like(d, v) for d, v in zip(default + (None,) * len(value), value))
    if default is None and isinstance(value, list):
        return tuple(like(None, v) for v in value)
    if isinstance(value, Mapping) and not isinstance(default, ml_collections.ConfigDict):
        return {k: like(None, v) for k, v in value.items()}
    return value


def _merge(config: ml_collections.ConfigDict, saved: Mapping[str, Any], path: str = "") -> list:
    """Sets the saved values present in `config`; returns the dotted fields it has not."""
    ignored = []
    for key, value in saved.items():
        if key not in config:
            ignored.append(f"{path}{key}")
        elif isinstance(config[key], ml_collections.ConfigDict) and isinstance(value, Mapping):
            ignored += _merge(config[key], value, f"{path}{key}.")
        else:
            config[key] = like(config[key], value)
    return ignored


def _get(tree: Any, path: tuple[str, ...]) -> Any:
    for key in path:
        if not isinstance(tree, Mapping) or key not in tree:
            return None
        tree = tree[key]
    return tree


def config_from_dict(saved: Mapping[str, Any]) -> tuple[ml_collections.ConfigDict, list[str]]:
    """(`config.base()` with the saved values set, the saved fields it has no place for).

    Towers, data modalities and objective terms are rebuilt from their saved types, so
    that each has its type's fields; evaluator entries are taken as saved. Fields the
    saved run did not have keep their defaults. The config comes back locked.
    """
    config = config_lib.base()
    for where, make in TYPED.items():
        entries = _get(saved, where)
        if entries is not None:
            *parents, leaf = where
            parent = config
            for p in parents:
                parent = parent[p]
            parent[leaf] = ml_collections.ConfigDict({n: make(e) for n, e in entries.items()})
    if "evals" in saved:
        config.evals = ml_collections.ConfigDict(like(None, dict(saved["evals"])))
    ignored = _merge(config, {k: v for k, v in saved.items() if k != "evals"})
    return config_lib.lock(config), ignored
