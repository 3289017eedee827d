"""A run's config: the base config file with its `arg`, plus the sweep's overrides.

The same `path[:arg]` and `--config.x=y` strings go to `mmjax.main`, so the config the
sweep reasons about (steps, FLOPs, lr) is the one the run trains with.
"""

import importlib.util
from pathlib import Path
from typing import Any

import ml_collections


def load_config(config_flag: str, overrides: dict[str, Any]) -> ml_collections.ConfigDict:
    """`configs/demo.py:steps=10` with overrides {"loss.name": "sigmoid"} applied."""
    path, _, arg = config_flag.partition(":")
    spec = importlib.util.spec_from_file_location(Path(path).stem, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    config = module.get_config(arg or None)
    for key, value in overrides.items():
        *parents, leaf = key.split(".")
        node = config
        for p in parents:
            node = node[p]
        node[leaf] = value
    return config


def override_flags(overrides: dict[str, Any]) -> list[str]:
    """{"loss.name": "sigmoid", "model.bias_init": -10.0} -> ["--config.loss.name=sigmoid", ...]."""
    return [f"--config.{k}={v}" for k, v in overrides.items()]
