"""Shared test fixtures: a tiny model config and numpy references."""

import os

import ml_collections
import numpy as np

from mmjax import config as config_lib


def session_cache() -> str:
    """The session's shared compilation cache (tests/conftest.py), not one per workdir;
    "" (none) outside pytest."""
    return os.environ.get("MMJAX_TEST_COMPILATION_CACHE", "")


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
    c.model.towers.image = config_lib.tower(
        "vit", variant="mu/8", width=32, depth=1, num_heads=2, mlp_dim=64
    )
    c.model.towers.text = config_lib.tower(
        "text", width=32, depth=1, num_heads=2, mlp_dim=64, vocab_size=128, context_length=12
    )
    c.schedule.warmup_steps = 2
    c.optim.lr = 1e-3
    c.data.modalities.image.size = 16
    c.data.num_threads = 1
    c.data.prefetch = 1
    c.data.synthetic.num_eval = 40
    c.compile_cache_dir = session_cache()
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
    """Environment for a `python -m mmjax.main` subprocess on fake CPU devices, with this
    session's other XLA flags (tests/conftest.py)."""
    flag = "--xla_force_host_platform_device_count"
    others = [f for f in os.environ.get("XLA_FLAGS", "").split() if not f.startswith(flag)]
    return dict(
        os.environ,
        PYTHONPATH=str(REPO),
        JAX_PLATFORMS="cpu",
        XLA_FLAGS=" ".join([*others, f"{flag}={devices}"]),
    )


def cli_cache() -> list[str]:
    """The flag that points a subprocess at the session's shared compilation cache, so
    that starts running the same program compile it once (put it before a test's own
    flags: a later `--config.compile_cache_dir` wins)."""
    path = session_cache()
    return [f"--config.compile_cache_dir={path}"] if path else []


def run_cli(args: list[str], cwd, devices: int = 1, expect: int = 0):
    """Runs mmjax.main; asserts its exit status; returns the CompletedProcess."""
    import subprocess
    import sys

    result = subprocess.run(
        [sys.executable, "-m", "mmjax.main", *cli_cache(), *args],
        cwd=cwd,
        env=cli_env(devices),
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert result.returncode == expect, result.stderr[-4000:]
    return result


def host_batch(config, index: int = 0) -> dict:
    """Batch `index` of the config's training data on one process, as numpy."""
    from mmjax.data import modalities, pipeline, sources
    from mmjax.data.examples import Prepare

    source = sources.build_source(config.data, "train", config.seed)
    prepare = Prepare(modalities.build_readers(config, train=True))
    ds = pipeline.train_dataset(source, prepare, config.batch_size, config.seed, 0, 1)
    return dict(ds[index])


def init_params(config):
    """The model's parameters initialised on one device from the seed, as numpy."""
    import jax

    from mmjax import state
    from mmjax.data.modalities import example_specs

    model = state.build(config, _one_device_mesh(config)).model
    inputs = state.dummy_inputs(example_specs(config))
    params = jax.jit(model.init)(jax.random.key(config.seed), inputs)["params"]
    return jax.device_get(state.strip_boxes(params))


def _one_device_mesh(config):
    import jax

    from mmjax.parallel import mesh as mesh_lib

    return mesh_lib.make_mesh(config.mesh, jax.devices()[:1])


def step_grads(config, mesh, params, batch, accum_steps: int | None = None, step: int = 0):
    """((loss, metrics), grads) of the train step's loss on `mesh`, as numpy."""
    import jax

    from mmjax import losses, state
    from mmjax.parallel import sharding
    from mmjax.train import step as step_lib

    with jax.set_mesh(mesh):
        model = state.build(config, mesh).model
        objective = losses.Objective(config.objectives, mesh)
        k = config.accum_steps if accum_steps is None else accum_steps
        fn = jax.jit(step_lib.make_grad_fn(model, objective, k))
        keys = step_lib.example_keys(config.seed, step, config.batch_size)
        return jax.device_get(fn(params, sharding.global_batch(batch, mesh), keys))


def assert_trees_close(actual, expected, rtol: float = 1e-5) -> None:
    """Every leaf equal to rtol of its own largest entry (per-element rtol means nothing for
    entries near zero)."""
    import jax

    flat = dict(jax.tree_util.tree_leaves_with_path(actual))
    for path, want in jax.tree_util.tree_leaves_with_path(expected):
        scale = np.abs(want).max() + 1e-12
        np.testing.assert_allclose(
            flat[path] / scale,
            want / scale,
            rtol=rtol,
            atol=rtol,
            err_msg=jax.tree_util.keystr(path),
        )


def param_shapes(config) -> dict:
    """The model's parameter tree as ShapeDtypeStructs (nothing allocated)."""
    from mmjax import state

    return state.build(config, _one_device_mesh(config)).abstract.params
