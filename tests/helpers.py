"""Shared test fixtures: a tiny model config and numpy references."""

import ml_collections
import numpy as np

from mmjax import config as config_lib


def tiny_config(**overrides) -> ml_collections.ConfigDict:
    """A model small enough to compile and step in about a second on CPU."""
    c = config_lib.base()
    c.batch_size = 16
    c.total_steps = 6
    c.log_every = 2
    c.ckpt_every = 3
    c.evals.zeroshot.batch_size = 16
    c.evals.zeroshot.every = 0
    c.model.embed_dim = 16
    c.model.image.variant = "mu/8"
    c.model.image.width = 32
    c.model.image.depth = 1
    c.model.image.num_heads = 2
    c.model.image.mlp_dim = 64
    c.model.text.width = 32
    c.model.text.depth = 1
    c.model.text.num_heads = 2
    c.model.text.mlp_dim = 64
    c.model.text.vocab_size = 128
    c.model.text.context_length = 12
    c.schedule.warmup_steps = 2
    c.optim.lr = 1e-3
    c.data.image_size = 16
    c.data.num_threads = 1
    c.data.prefetch = 1
    c.data.synthetic.num_eval = 40
    c.lock()
    return config_lib.apply_overrides(c, overrides)


def infonce_numpy(image: np.ndarray, text: np.ndarray, scale: float) -> float:
    """Symmetric InfoNCE (Radford et al. 2021, Fig. 3 pseudocode) in float64."""
    x = np.asarray(image, np.float64)
    y = np.asarray(text, np.float64)
    logits = scale * x @ y.T
    n = len(x)

    def cross_entropy(z: np.ndarray) -> float:
        z = z - z.max(axis=1, keepdims=True)
        log_p = z - np.log(np.exp(z).sum(axis=1, keepdims=True))
        return -log_p[np.arange(n), np.arange(n)].mean()

    return 0.5 * (cross_entropy(logits) + cross_entropy(logits.T))


REPO = __import__("pathlib").Path(__file__).resolve().parents[1]


def cli_env(devices: int = 1) -> dict[str, str]:
    """Environment for a `python -m mmjax.main` subprocess on fake CPU devices."""
    import os

    return dict(
        os.environ,
        PYTHONPATH=str(REPO),
        JAX_PLATFORMS="cpu",
        XLA_FLAGS=f"--xla_force_host_platform_device_count={devices}",
    )


def run_cli(args: list[str], cwd, devices: int = 1, expect: int = 0):
    """Runs mmjax.main; asserts its exit status; returns the CompletedProcess."""
    import subprocess
    import sys

    result = subprocess.run(
        [sys.executable, "-m", "mmjax.main", *args],
        cwd=cwd,
        env=cli_env(devices),
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert result.returncode == expect, result.stderr[-4000:]
    return result
