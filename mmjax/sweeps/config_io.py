"""A run's config: the base config file with its `arg`, plus the sweep's overrides.

The same `path[:arg]` and `--config.x=y` strings go to `mmjax.main`, so the config the
sweep reasons about (steps, FLOPs, lr) is the one the run trains with.
"""

from typing import Any

import ml_collections

from mmjax import config as config_lib


def load_config(config_flag: str, overrides: dict[str, Any]) -> ml_collections.ConfigDict:
    """`configs/demo.py:steps=10` with overrides {"optim.lr": 1e-3} applied."""
    return config_lib.load_config(config_flag, overrides)


def override_flags(overrides: dict[str, Any]) -> list[str]:
    """{"optim.lr": 1e-3, "seed": 1} -> ["--config.optim.lr=0.001", "--config.seed=1"]."""
    return [f"--config.{k}={v}" for k, v in overrides.items()]
