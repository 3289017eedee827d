"""Model towers: published parameter counts, pooling, masking."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from mmjax import config as config_lib
from mmjax import models, state
from mmjax.models.vit import decode_variant
from tests.helpers import init_params, param_shapes, tiny_config


def test_clip_b16_matches_open_clip_parameter_count():
    # open_clip ViT-B-16: 149,620,737 parameters (86,192,640 visual + 63,428,096 text + 1).
    count = state.count_params(param_shapes(config_lib.base()))
    assert abs(count - 149_620_737) / 149_620_737 < 0.005, count


@pytest.mark.parametrize(
    "variant, expected",
    # timm vit_{b,s}_patch16_224 and vit_large_patch14_224 totals (86,567,656, 22,050,664,
    # 304,203,752) minus their 1000-class heads.
    [("B/16", 85_798_656), ("S/16", 21_665_664), ("L/14", 303_178_752)],
)
def test_vit_tower_counts(variant, expected):
    c = config_lib.base()
    c.model.towers.image.variant = variant
    image = param_shapes(c)["image"]
    proj = state.count_params(image["proj"])  # the joint-space projection is not timm's
    assert state.count_params(image) - proj == expected


def test_decode_variant_rejects_unknown():
    assert decode_variant("L/14")[1] == 14
    with pytest.raises(ValueError, match="Unknown ViT variant"):
        decode_variant("Q/16")


@pytest.mark.parametrize("pool", ["cls", "gap", "map"])
def test_image_pools_give_unit_embeddings(pool):
    c = tiny_config(**{"model.towers.image.pool": pool})
    model = models.build_model(c.model, c.objectives)
    images = jax.random.randint(jax.random.key(1), (3, 16, 16, 3), 0, 256).astype(jnp.uint8)
    params = jax.jit(model.init)(jax.random.key(0), {"image": images})
    emb = jax.jit(lambda p, x: model.apply(p, "image", x, method="embed"))(params, images)
    assert emb.shape == (3, 16)
    np.testing.assert_allclose(np.linalg.norm(emb, axis=-1), 1.0, rtol=1e-5)


@functools.cache
def _tiny_params():
    return {"params": init_params(tiny_config())}


def _text_features(causal: bool, pool: str, tokens: np.ndarray) -> np.ndarray:
    """Masking and pooling add no parameters: one set serves every variant."""
    c = tiny_config(**{"model.towers.text.causal": causal, "model.towers.text.pool": pool})
    model = models.build_model(c.model, c.objectives)
    return np.asarray(model.apply(_tiny_params(), "text", jnp.asarray(tokens), method="embed"))


def test_causal_eot_pooling_ignores_tokens_after_eot():
    # The end token (largest id, 127) at position 3; what follows must not matter.
    a = np.array([[126, 5, 9, 127, 0, 0, 0, 0, 0, 0, 0, 0]])
    b = a.copy()
    b[0, 4:7] = [3, 4, 5]
    np.testing.assert_allclose(_text_features(True, "eot", a), _text_features(True, "eot", b))
    c = a.copy()
    c[0, 1] = 6  # but a token before it does
    assert not np.allclose(_text_features(True, "eot", a), _text_features(True, "eot", c))


def test_causal_text_attends_to_a_real_token_with_the_padding_id():
    """As open_clip: the causal tower masks by position only, so an id-0 token inside the
    caption (CLIP BPE's "!") is seen, while the id-0 padding after the end token is not."""
    c = tiny_config()
    model = models.build_model(c.model, c.objectives)
    params = _tiny_params()
    moved = jax.tree_util.tree_map_with_path(
        lambda p, x: (
            jnp.asarray(x).at[0].add(1.0) if "token_embed" in jax.tree_util.keystr(p) else x
        ),
        params,
    )
    inside = jnp.asarray([[126, 0, 9, 127, 0, 0, 0, 0, 0, 0, 0, 0]])
    after = jnp.asarray([[126, 5, 9, 127, 0, 0, 0, 0, 0, 0, 0, 0]])
    embed = jax.jit(lambda p, t: model.apply(p, "text", t, method="embed"))
    assert not np.allclose(embed(params, inside), embed(moved, inside))
    np.testing.assert_allclose(embed(params, after), embed(moved, after), rtol=1e-6)


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
