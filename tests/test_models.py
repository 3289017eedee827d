"""Model towers: published parameter counts, pooling, masking."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from mmjax import config as config_lib
from mmjax import models
from mmjax.models.vit import decode_variant
from mmjax.train import state
from tests.helpers import tiny_config


def param_count(model_config, image_size=224) -> int:
    model = models.build_model(model_config)
    inputs = state.dummy_inputs(image_size, model_config.text.context_length)
    shapes = jax.eval_shape(lambda: model.init(jax.random.key(0), *inputs)["params"])
    return state.count_params(state.strip_boxes(shapes))


def test_clip_b16_matches_open_clip_parameter_count():
    # open_clip ViT-B-16: 149,620,737 parameters (86,192,640 visual + 63,428,096 text + 1).
    count = param_count(config_lib.base().model)
    assert abs(count - 149_620_737) / 149_620_737 < 0.005, count


@pytest.mark.parametrize(
    "variant, expected",
    # timm vit_{b,s}_patch16_224 and vit_large_patch14_224 totals (86,567,656, 22,050,664,
    # 304,203,752) minus their 1000-class heads.
    [("B/16", 85_798_656), ("S/16", 21_665_664), ("L/14", 303_178_752)],
)
def test_vit_tower_counts(variant, expected):
    c = config_lib.base().model
    c.image.variant = variant
    c.image.pool = "cls"
    model = models.build_model(c)
    shapes = jax.eval_shape(
        lambda: model.init(jax.random.key(0), *state.dummy_inputs(224, 77))["params"]
    )
    vit = state.count_params(state.strip_boxes(shapes)["image"])
    assert vit == expected


def test_decode_variant_rejects_unknown():
    assert decode_variant("L/14")[1] == 14
    with pytest.raises(ValueError, match="Unknown ViT variant"):
        decode_variant("Q/16")


@pytest.mark.parametrize("pool", ["cls", "gap", "map"])
def test_image_pools_give_unit_embeddings(pool):
    c = tiny_config(**{"model.image.pool": pool}).model
    model = models.build_model(c)
    images, tokens = state.dummy_inputs(16, 12, batch=3)
    images = jax.random.normal(jax.random.key(1), images.shape)
    params = jax.jit(model.init)(jax.random.key(0), images, tokens)
    emb = jax.jit(lambda p, x: model.apply(p, x, method="encode_image"))(params, images)
    assert emb.shape == (3, 16)
    np.testing.assert_allclose(np.linalg.norm(emb, axis=-1), 1.0, rtol=1e-5)


@functools.cache
def _tiny_params():
    model = models.build_model(tiny_config().model)
    return jax.jit(model.init)(jax.random.key(0), *state.dummy_inputs(16, 12))


def _text_features(causal: bool, pool: str, tokens: np.ndarray) -> np.ndarray:
    """Masking and pooling add no parameters: one set serves every variant."""
    c = tiny_config(**{"model.text.causal": causal, "model.text.pool": pool}).model
    model = models.build_model(c)
    return np.asarray(model.apply(_tiny_params(), jnp.asarray(tokens), method="encode_text"))


def test_causal_eot_pooling_ignores_tokens_after_eot():
    # The end token (largest id, 127) at position 3; what follows must not matter.
    a = np.array([[126, 5, 9, 127, 0, 0, 0, 0, 0, 0, 0, 0]])
    b = a.copy()
    b[0, 4:7] = [3, 4, 5]
    np.testing.assert_allclose(_text_features(True, "eot", a), _text_features(True, "eot", b))
    c = a.copy()
    c[0, 1] = 6  # but a token before it does
    assert not np.allclose(_text_features(True, "eot", a), _text_features(True, "eot", c))


def test_bidirectional_last_pooling_masks_padding_but_sees_all_text():
    a = np.array([[126, 5, 9, 127, 0, 0, 0, 0, 0, 0, 0, 0]])
    longer = np.array([[126, 5, 9, 11, 127, 0, 0, 0, 0, 0, 0, 0]])
    fa = _text_features(False, "last", a)
    # Padding length does not change the result: same text, context cut to 8.
    fa_short = _text_features(False, "last", a[:, :8])
    np.testing.assert_allclose(fa, fa_short, rtol=1e-5, atol=1e-6)
    # A bidirectional encoder lets the first token see later ones.
    b = a.copy()
    b[0, 2] = 10
    assert not np.allclose(_text_features(False, "first", a), _text_features(False, "first", b))
    assert not np.allclose(fa, _text_features(False, "last", longer))
