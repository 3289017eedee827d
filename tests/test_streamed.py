"""Streamed accumulation (micro-batches fed by the host, both passes) takes the same
step as the one-jit train step on the assembled batch, and its memory does not hold the
global input batch."""

import jax
import numpy as np
import pytest

from mmjax import losses, state
from mmjax.parallel import mesh as mesh_lib
from mmjax.parallel import sharding
from mmjax.train import step, streamed
from tests.helpers import assert_trees_close, tiny_config


def micro_batches(k: int, rows: int, seed: int = 0) -> list[dict]:
    rng = np.random.default_rng(seed)
    return [
        {
            "image": rng.integers(0, 256, (rows, 16, 16, 3), dtype=np.uint8),
            "text": rng.integers(1, 127, (rows, 12)).astype(np.int32),
        }
        for _ in range(k)
    ]


def test_assemble_places_micro_batch_j_in_block_j_of_every_shard():
    parts = [{"x": np.arange(4) + 10 * j} for j in range(3)]  # 2 shards, 2 rows each
    np.testing.assert_array_equal(
        streamed.assemble(parts, 2)["x"], [0, 1, 10, 11, 20, 21, 2, 3, 12, 13, 22, 23]
    )


@pytest.mark.parametrize("loss", ["softmax_ring"])
def test_streamed_step_equals_one_jit_step(loss):
    """Same loss, parameters and optimizer state after a step (float32, rtol 1e-5)."""
    k = 4
    overrides = {"batch_size": 32, "objectives.image_text.loss": loss}
    if loss == "sigmoid_ring":
        overrides["objectives.image_text.bias_init"] = -10.0
    one_jit = tiny_config(**overrides)
    config = tiny_config(**overrides, accum_steps=k)
    mesh = mesh_lib.make_mesh(config.mesh)
    micros = micro_batches(k, config.batch_size // k)
    with jax.set_mesh(mesh):
        built = state.build(config, mesh)
        objective = losses.Objective(config.objectives, mesh)
        init = lambda: state.init_state(built.init_fn, jax.random.key(0), built.shardings)
        full = streamed.assemble(micros, streamed.batch_shards(mesh))
        train_step = jax.jit(
            step.make_train_step(built.model, objective, built.tx, built.schedule, one_jit)
        )
        want_state, want = train_step(init(), sharding.global_batch(full, mesh))
        parts = streamed.make_parts(built, objective, config, mesh)
        got_state, got = streamed.StreamedStep(parts, objective, mesh, k)(
            init(), lambda: iter(micros)
        )
    np.testing.assert_allclose(got["loss"], want["loss"], rtol=1e-6)
    np.testing.assert_allclose(got["grad_norm"], want["grad_norm"], rtol=1e-5)
    assert_trees_close(jax.device_get(got_state.params), jax.device_get(want_state.params))
    assert int(got_state.step) == 1


def test_streamed_memory_does_not_hold_the_input_batch():
    """Global batch 4096 of 16 px images over 8 devices in 64 micro-batches: beside the
    parameters and the output buffers, the per-micro-batch parts take one micro-batch of
    input (6 KiB per device), never the 384 KiB per device of the whole batch."""
    config = tiny_config(batch_size=4096, accum_steps=64)
    mesh = mesh_lib.make_mesh(config.mesh)
    with jax.set_mesh(mesh):
        built = state.build(config, mesh)
        objective = losses.Objective(config.objectives, mesh)
        parts = streamed.make_parts(built, objective, config, mesh)
        r = streamed.memory_report(
            parts, built.abstract, streamed.micro_spec(config, mesh, objective), {}
        )
    image_per_device = 4096 * 16 * 16 * 3 // 8
    embeddings_per_device = 2 * 4096 * 16 * 4 // 8
    params = sum(x.size * x.dtype.itemsize for x in jax.tree.leaves(built.abstract.params))
    assert r["buffers"] == embeddings_per_device
    for name, copies in (("embed", 1), ("backward", 2)):  # backward: params and grads
        inputs = r[name]["arguments"] - copies * params - r["buffers"]
        assert 0 < inputs < image_per_device / 16, (name, r[name])
    assert r["peak"] >= r["loss"]["total"] > 0


def test_streamed_training_stops_and_resumes_bitwise(tmp_path):
    """The loop with `accum_streamed`: reading micro-batches twice per step, stopped at
    step 2 and resumed, ends on the parameters of an uninterrupted run."""
    from mmjax.train import loop
    from tests.test_resume import saved_params

    kw = dict(total_steps=4, ckpt_every=100, accum_steps=2, accum_streamed=True, log_every=1)
    config = tiny_config(**kw)
    last = loop.train(config, str(tmp_path / "straight"))
    assert np.isfinite(last["loss"]) and "tflops_per_s_per_device" in last
    loop.train(tiny_config(**kw, stop_at_step=2), str(tmp_path / "resumed"))
    loop.train(config, str(tmp_path / "resumed"))
    straight = saved_params(str(tmp_path / "straight"), config)
    resumed = saved_params(str(tmp_path / "resumed"), config)
    for a, b in zip(jax.tree.leaves(straight), jax.tree.leaves(resumed)):
        np.testing.assert_array_equal(a, b)
