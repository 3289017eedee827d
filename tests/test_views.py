"""Augmented views: image (SimCLR/SLIP) and signal (noise, time masks) augmentations on the
host, views as modalities sharing one tower, and an NT-Xent term over them in the step."""

import jax
import numpy as np
import pytest

from mmjax import config as config_lib
from mmjax.data.augment import ImageAugment, SignalAugment
from tests.helpers import assert_trees_close, host_batch, init_params, step_grads, tiny_config
from tests.test_train_step import on_mesh


def views_config(loss: str = "ntxent"):
    """CLIP plus a second, augmented view of the image ("view", the image tower shared)
    and an NT-Xent term between the two views."""
    c = tiny_config()
    with c.unlocked():
        c.model.towers.view = config_lib.tower("vit", share="image")
        aug = dict(recrop=True, crop_scale=(0.2, 1.0), flip=0.5, color_jitter=0.4)
        c.data.modalities.view = config_lib.modality(
            "image", key="image", size=16, grayscale=0.2, blur=0.5, **aug
        )
        c.objectives.views = config_lib.objective(
            loss, ("image", "view"), temperature_init=float(np.log(10.0)), weight=0.5
        )
    return c


def test_image_augmentations_do_what_they_say():
    rng = np.random.default_rng(0)
    image = rng.integers(0, 256, (8, 8, 3), dtype=np.uint8)
    flipped = ImageAugment(flip=1.0)(image, rng)
    np.testing.assert_array_equal(flipped, image[:, ::-1])
    gray = ImageAugment(grayscale=1.0)(image, rng).astype(np.float64)
    want = np.round(image.astype(np.float64) @ [0.299, 0.587, 0.114])
    np.testing.assert_allclose(gray[..., 0], want, atol=1)
    assert (gray[..., 0] == gray[..., 1]).all() and (gray[..., 0] == gray[..., 2]).all()
    noise = rng.integers(0, 256, (224, 224, 3), dtype=np.uint8)
    assert ImageAugment(blur=1.0)(noise, rng).std() < 0.9 * noise.std()  # a low-pass filter
    jitter = ImageAugment(color_jitter=0.8, p_jitter=1.0)
    out = jitter(image, np.random.default_rng(1))
    assert out.dtype == np.uint8 and out.shape == image.shape and (out != image).any()
    np.testing.assert_array_equal(out, jitter(image, np.random.default_rng(1)))
    assert ImageAugment()(image, rng) is image  # off: untouched, nothing drawn


def test_signal_time_masks_and_noise():
    x = np.ones((100, 3), np.float32)
    masked = SignalAugment(time_masks=2, time_mask_width=0.2)(x, np.random.default_rng(0))
    zero_rows = (masked == 0).all(1)
    assert 0 < zero_rows.sum() <= 40 and ((masked == 0) == zero_rows[:, None]).all()
    wave = np.random.default_rng(1).normal(size=20000).astype(np.float32)
    noisy = SignalAugment(noise=0.1)(wave, np.random.default_rng(2))
    assert np.std(noisy - wave) == pytest.approx(0.1 * wave.std(), rel=0.05)


def test_two_views_of_one_record_differ_and_repeat():
    c = views_config()
    batch = host_batch(c)
    assert batch["view"].shape == batch["image"].shape
    assert (batch["view"] != batch["image"]).any(1).any(1).any(1).all()  # every example
    np.testing.assert_array_equal(host_batch(c)["view"], batch["view"])  # seeded by example


def test_views_step_on_8_devices_equals_1():
    """(The ring form's 1 = 8 devices is tested on the loss alone: test_losses_ntxent.)"""
    c = views_config()
    params, batch = init_params(c), host_batch(c)
    assert "view" not in params  # one tower for both views
    one = step_grads(c, on_mesh(c, (1, 1, 1)), params, batch)
    eight = step_grads(c, on_mesh(c, (8, 1, 1)), params, batch)
    np.testing.assert_allclose(eight[0][0], one[0][0], rtol=1e-5)
    assert_trees_close(eight[1], one[1], rtol=1e-5)
    total = one[0][1]["image_text/loss"] + 0.5 * one[0][1]["views/loss"]
    np.testing.assert_allclose(one[0][0], total, rtol=1e-6)
    assert np.abs(jax.tree.leaves(one[1]["objectives"]["views"])[0]) > 0
