"""Optimizer: which parameters decay, and the schedule's values."""

import math

import jax
import numpy as np

from mmjax import optim
from tests.helpers import param_shapes, tiny_config


def test_weight_decay_only_on_weight_matrices():
    config = tiny_config(
        **{"objectives.image_text.bias_init": -10.0, "model.towers.image.pool": "map"}
    )
    mask = optim.decay_mask(param_shapes(config))
    flat = {jax.tree_util.keystr(p): m for p, m in jax.tree_util.tree_leaves_with_path(mask)}
    decayed = {k for k, m in flat.items() if m}
    assert "['image']['proj']['kernel']" in decayed
    assert any("['mlp']['fc1']['kernel']" in k for k in decayed)
    assert any("['attn']['qkv']['kernel']" in k for k in decayed)
    for name in ("['t']", "['b']", "pos_embed", "token_embed", "probe", "bias", "scale"):
        hits = [k for k in flat if name in k]
        assert hits, name
        assert not any(flat[k] for k in hits), name


def test_warmup_cosine_schedule():
    config = tiny_config(total_steps=100, **{"schedule.warmup_steps": 10, "optim.lr": 1.0})
    schedule = optim.make_schedule(config)
    np.testing.assert_allclose(schedule(0), 0.0)
    np.testing.assert_allclose(schedule(5), 0.5)
    np.testing.assert_allclose(schedule(10), 1.0)
    # Cosine from step 10 to 100: halfway (step 55) is half the peak.
    np.testing.assert_allclose(schedule(55), 0.5 * (1 + math.cos(math.pi * 0.5)), atol=1e-6)
    np.testing.assert_allclose(schedule(100), 0.0, atol=1e-7)


def test_warmup_constant_cooldown_schedule():
    config = tiny_config(total_steps=100, **{"schedule.warmup_steps": 10, "optim.lr": 1.0})
    config.schedule.name = "warmup_constant_cooldown"
    config.schedule.cooldown_steps = 20
    schedule = optim.make_schedule(config)
    np.testing.assert_allclose(schedule(5), 0.5)
    np.testing.assert_allclose([schedule(10), schedule(50), schedule(80)], 1.0)
    np.testing.assert_allclose(schedule(85), 1 - math.sqrt(5 / 20), rtol=1e-6)  # 1-sqrt
    np.testing.assert_allclose(schedule(100), 0.0, atol=1e-7)
    config.schedule.cooldown_shape = "linear"
    np.testing.assert_allclose(optim.make_schedule(config)(85), 0.75, rtol=1e-6)


def test_inverse_sqrt_schedule_and_lr_scaling():
    config = tiny_config(total_steps=100, **{"schedule.warmup_steps": 4, "optim.lr": 2.0})
    config.schedule.name = "inverse_sqrt"
    schedule = optim.make_schedule(config)
    np.testing.assert_allclose([schedule(2), schedule(4), schedule(16)], [1.0, 2.0, 1.0])
    config.batch_size, config.optim.lr_base_batch = 1024, 256
    config.optim.lr_scaling = "linear"
    assert optim.peak_lr(config) == 8.0
    config.optim.lr_scaling = "sqrt"
    assert optim.peak_lr(config) == 4.0
