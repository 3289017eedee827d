"""One train step on 8 fake devices equals the same step on 1 device, and the loss
equals an independent float64 numpy InfoNCE; likewise for three towers and three terms."""

import functools

import jax
import numpy as np
import pytest
from ml_collections import ConfigDict

from mmjax import config as config_lib
from mmjax import state
from mmjax.parallel import mesh as mesh_lib
from tests.helpers import (
    assert_trees_close,
    host_batch,
    infonce_numpy,
    init_params,
    step_grads,
    tiny_config,
)

CONFIG = tiny_config()


def three_towers() -> ConfigDict:
    """Image, text and a second image tower ("sketch", its own ViT on the same pictures),
    with three terms: image-text softmax, sketch-text sigmoid, image-sketch softmax_ring."""
    c = tiny_config()
    with c.unlocked():
        c.model.towers.sketch = config_lib.tower(
            "vit", variant="mu/4", width=16, depth=1, num_heads=2, mlp_dim=32, pool="gap"
        )
        c.data.modalities.sketch = config_lib.modality("image", key="image", size=16)
        c.objectives.sketch_text = config_lib.objective(
            "sigmoid", ("sketch", "text"), weight=0.5, bias_init=-5.0
        )
        c.objectives.image_sketch = config_lib.objective(
            "softmax_ring", ("image", "sketch"), tile_size=3, chunk_size=2
        )
    return c


def on_mesh(config: ConfigDict, mesh_axes: tuple[int, int, int]):
    n = int(np.prod(mesh_axes))
    mesh_config = ConfigDict(dict(config.mesh.to_dict(), data=mesh_axes[0], fsdp=mesh_axes[1]))
    mesh_config.tensor = mesh_axes[2]
    return mesh_lib.make_mesh(mesh_config, jax.devices()[:n])


@functools.cache
def run(name: str, mesh_axes: tuple[int, int, int]):
    config = {"two": CONFIG, "three": three_towers()}[name]
    mesh = on_mesh(config, mesh_axes)
    params = init_params(config)
    with jax.set_mesh(mesh):
        placed = jax.device_put(params, state.build(config, mesh).shardings.params)
    return step_grads(config, mesh, placed, host_batch(config))


def assert_same(a, b) -> None:
    (loss_a, metrics_a), grads_a = a
    (loss_b, metrics_b), grads_b = b
    np.testing.assert_allclose(loss_a, loss_b, rtol=1e-5)
    for k in metrics_b:
        np.testing.assert_allclose(metrics_a[k], metrics_b[k], rtol=1e-5, err_msg=k)
    assert_trees_close(grads_a, grads_b, rtol=1e-5)


@pytest.mark.parametrize("mesh_axes", [(8, 1, 1), (2, 4, 1), (2, 2, 2)])
def test_step_on_8_devices_equals_1_device(mesh_axes):
    assert_same(run("two", mesh_axes), run("two", (1, 1, 1)))


@pytest.mark.parametrize("mesh_axes", [(8, 1, 1), (2, 2, 2)])
def test_three_towers_three_terms_on_8_devices_equal_1_device(mesh_axes):
    (loss, metrics), grads = run("three", (1, 1, 1))
    assert set(grads) == {"image", "text", "sketch", "objectives"}
    assert {"image_text", "sketch_text", "image_sketch"} == set(grads["objectives"])
    expected = (
        metrics["image_text/loss"]
        + 0.5 * metrics["sketch_text/loss"]
        + metrics["image_sketch/loss"]
    )
    np.testing.assert_allclose(loss, expected, rtol=1e-6)
    assert_same(run("three", mesh_axes), run("three", (1, 1, 1)))


def test_loss_equals_numpy_infonce():
    (loss, metrics), _ = run("two", (1, 1, 1))
    params, batch = init_params(CONFIG), host_batch(CONFIG)
    model = state.build(CONFIG, on_mesh(CONFIG, (1, 1, 1))).model
    out = jax.jit(model.apply)({"params": params}, batch)
    x, y = np.asarray(out["image"]["embedding"]), np.asarray(out["text"]["embedding"])
    scale = float(np.exp(params["objectives"]["image_text"]["t"]))
    np.testing.assert_allclose(loss, infonce_numpy(x, y, scale), rtol=1e-5)
    logits = x.astype(np.float64) @ y.astype(np.float64).T
    n = np.arange(len(logits))
    acc = metrics["image_text/acc_image_to_text"], metrics["image_text/acc_text_to_image"]
    np.testing.assert_allclose(acc[0], np.mean(logits.argmax(1) == n), atol=1e-7)
    np.testing.assert_allclose(acc[1], np.mean(logits.argmax(0) == n), atol=1e-7)
