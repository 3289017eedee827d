"""One train step on 8 fake devices equals the same step on 1 device, and the loss
equals an independent float64 numpy InfoNCE."""

import functools

import jax
import numpy as np
import pytest
from ml_collections import ConfigDict

from mmjax import losses, models
from mmjax.data import pipeline, sources, tokenizers
from mmjax.parallel import mesh as mesh_lib
from mmjax.parallel import sharding
from mmjax.train import optim, state, step
from tests.helpers import infonce_numpy, tiny_config

CONFIG = tiny_config()


@functools.cache
def host_batch() -> dict[str, np.ndarray]:
    tok = tokenizers.build_tokenizer("simple", CONFIG.model.text)
    ds = pipeline.train_dataset(
        sources.build_source(CONFIG.data, "train", 0), tok, CONFIG.batch_size, 0, 0, 1
    )
    return ds[0]


@functools.cache
def host_params():
    """Parameters initialised once on one device, as numpy."""
    model = models.build_model(CONFIG.model)
    inputs = state.dummy_inputs(CONFIG.data.image_size, CONFIG.model.text.context_length)
    params = jax.jit(model.init)(jax.random.key(0), *inputs)["params"]
    return jax.device_get(state.strip_boxes(params))


def grads_on(mesh_axes: tuple[int, int, int]):
    """Loss, metrics and gradients of one step on a mesh (data, fsdp, tensor)."""
    n = int(np.prod(mesh_axes))
    mesh_config = ConfigDict(dict(CONFIG.mesh.to_dict(), data=mesh_axes[0], fsdp=mesh_axes[1]))
    mesh_config.tensor = mesh_axes[2]
    mesh = mesh_lib.make_mesh(mesh_config, jax.devices()[:n])
    model = models.build_model(CONFIG.model)
    tx, _ = optim.make_optimizer(CONFIG)
    init_fn = state.make_init_fn(
        model, tx, state.dummy_inputs(CONFIG.data.image_size, CONFIG.model.text.context_length)
    )
    with jax.set_mesh(mesh):
        _, shardings = state.abstract_state(init_fn, mesh, CONFIG.mesh.rules)
        params = jax.device_put(host_params(), shardings.params)
        batch = sharding.global_batch(host_batch(), mesh)
        loss_fn = losses.sharded_loss(losses.get_loss(CONFIG.loss.name, CONFIG.loss), mesh)
        grad_fn = jax.jit(step.make_grad_fn(model, loss_fn))
        (loss, metrics), grads = grad_fn(params, batch)
        embed = jax.jit(
            lambda p, b: model.apply({"params": p}, step.normalize_images(b["image"]), b["tokens"])
        )
        out = embed(params, batch)
    return jax.device_get((loss, metrics, grads, out))


@pytest.fixture(scope="module")
def one_device():
    return grads_on((1, 1, 1))


@pytest.mark.parametrize("mesh_axes", [(8, 1, 1), (2, 4, 1), (2, 2, 2)])
def test_step_on_8_devices_equals_1_device(one_device, mesh_axes):
    loss1, metrics1, grads1, _ = one_device
    loss8, metrics8, grads8, _ = grads_on(mesh_axes)
    np.testing.assert_allclose(loss8, loss1, rtol=1e-5)
    for k in metrics1:
        np.testing.assert_allclose(metrics8[k], metrics1[k], rtol=1e-5, err_msg=k)
    flat1 = jax.tree_util.tree_leaves_with_path(grads1)
    flat8 = dict(jax.tree_util.tree_leaves_with_path(grads8))
    for path, g1 in flat1:
        scale = np.abs(g1).max() + 1e-12
        np.testing.assert_allclose(
            flat8[path] / scale,
            g1 / scale,
            rtol=1e-5,
            atol=1e-5,
            err_msg=jax.tree_util.keystr(path),
        )


def test_loss_equals_numpy_infonce(one_device):
    loss, metrics, _, out = one_device
    expected = infonce_numpy(out["image"], out["text"], float(out["scale"]))
    np.testing.assert_allclose(loss, expected, rtol=1e-5)
    logits = np.asarray(out["image"], np.float64) @ np.asarray(out["text"], np.float64).T
    np.testing.assert_allclose(
        metrics["acc_x2y"], np.mean(logits.argmax(1) == np.arange(len(logits))), atol=1e-7
    )
    np.testing.assert_allclose(
        metrics["acc_y2x"], np.mean(logits.argmax(0) == np.arange(len(logits))), atol=1e-7
    )
