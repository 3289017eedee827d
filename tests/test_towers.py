"""The audio, time-series and video towers: shapes, parameter counts from the layer shapes,
8 devices against 1, masking only in training and only from the example keys, and the
video's temporal position embeddings."""

import dataclasses
import functools

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest

from mmjax import config as config_lib
from mmjax import models, state
from mmjax.models.audio import SpecAugment, SpectrogramStem, mel_config
from mmjax.models.model import modality_keys
from mmjax.models.timeseries import TimeMasks
from mmjax.parallel import mesh as mesh_lib
from mmjax.parallel import sharding
from tests.helpers import assert_trees_close

B, W, MLP, E = 8, 32, 64, 16
SIZE = dict(width=W, depth=1, num_heads=2, mlp_dim=MLP)
AUDIO = dict(variant="mu", sample_rate=8000, n_fft=256, hop_length=64, n_mels=32, patch=(8, 8))
AUDIO_MASKS = SpecAugment(time_masks=2, time_mask_width=10, freq_masks=1, freq_mask_width=6)
MASKED_AUDIO = dict(AUDIO, **dataclasses.asdict(AUDIO_MASKS))  # the config's field names
IMU_MASKS = TimeMasks(count=2, max_width=3)
IMU = dict(variant="mu", patch_length=8, time_masks=2, time_mask_width=3)
# name: (tower type, fields, tokens the encoder sees, hand-counted stem parameters)
TOWERS = {
    # 0.5 s at 8 kHz, hop 64: 63 frames x 32 mels -> 7 x 4 patches of 8 x 8, and a class token
    "audio": ("audio", MASKED_AUDIO, 1 + 7 * 4, 8 * 8 * 1 * W + W + W + (1 + 28) * W),
    # AST's overlapping patches: stride 4 -> 14 x 7
    "audio_ast": ("audio", dict(AUDIO, stride=(4, 4), pool="gap"), 14 * 7, 8 * 8 * W + W + 98 * W),
    # 64 samples x 6 channels -> 8 patches of 8 samples across channels
    "imu": ("timeseries", IMU, 1 + 8, 8 * 6 * W + W + W + 9 * W),
    # a token per channel and patch: channel embeddings [6] + time ones [8]
    "imu_channels": (
        "timeseries",
        dict(variant="mu", patch_length=8, channel_tokens=True, pool="gap"),
        6 * 8,
        8 * W + W + 6 * W + 8 * W,
    ),
    # 4 frames of 16 x 16 -> 4 x 4 patches of 8 x 8, the image conv; temporal [4] + spatial [4]
    "video": ("video", dict(variant="mu/8"), 1 + 4 * 4, 8 * 8 * 3 * W + W + W + 4 * W + 4 * W),
    # tubelets of 2 frames: 2 x 4 tokens, a 3D conv; temporal [2] + spatial [4]
    "video_tubelets": (
        "video",
        dict(variant="mu/8", tubelet=2, pool="gap"),
        2 * 4,
        2 * 8 * 8 * 3 * W + W + 2 * W + 4 * W,
    ),
}


def inputs_of(name: str, batch: int = B, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    kind = TOWERS[name][0]
    if kind == "audio":  # tones of random pitch in noise, 0.5 s at 8 kHz
        t = np.arange(4000) / 8000
        pitch = rng.uniform(100, 3000, (batch, 1))
        return (np.sin(2 * np.pi * pitch * t) + 0.1 * rng.normal(size=(batch, 4000))).astype(
            np.float32
        )
    if kind == "timeseries":  # channels with their own offsets and scales
        scale = rng.uniform(0.1, 10, (1, 1, 6))
        return (rng.normal(size=(batch, 64, 6)) * scale + 3 * scale).astype(np.float32)
    return rng.integers(0, 256, (batch, 4, 16, 16, 3), dtype=np.uint8)


def model_config(*names: str, **overrides) -> ml_collections.ConfigDict:
    c = config_lib.base().model
    c.embed_dim = E
    c.towers = ml_collections.ConfigDict()
    for name in names:
        kind, fields, _, _ = TOWERS[name]
        c.towers[name] = config_lib.tower(kind, **{**SIZE, **fields, **overrides})
    return c


@functools.cache
def built(*names: str, **overrides):
    """(model, boxed abstract params, host-drawn float32 params) of a model with the named
    towers. Drawing the parameters on the host spares an init compile per model."""
    model = models.build_model(model_config(*names, **overrides))
    inputs = {n: inputs_of(n, 1) for n in names}
    boxed = jax.eval_shape(model.init, jax.random.key(0), inputs)["params"]
    rng = np.random.default_rng(0)

    def draw(path, a):
        noise = rng.normal(0, 0.2, a.shape).astype(np.float32)
        return noise / 2 + 1 if jax.tree_util.keystr(path).endswith("['scale']") else noise

    return model, boxed, jax.tree_util.tree_map_with_path(draw, state.strip_boxes(boxed))


def keys_of(seed: int, batch: int = B) -> jax.Array:
    """[batch] PRNG keys from host bits (no compile per batch size, as split would need)."""
    bits = np.random.default_rng(seed).integers(0, 2**32, (batch, 2), dtype=np.uint32)
    return jax.random.wrap_key_data(bits)


def encoder_block(w: int, m: int) -> int:
    """ln1, qkv, attention out, ln2, fc1, fc2."""
    return 2 * w + (w * 3 * w + 3 * w) + (w * w + w) + 2 * w + (w * m + m) + (m * w + w)


# One tower of each type, with every stem's code path between them (SpecAugment, the 2D
# conv and joint position embeddings; time masks and the dense patch embedding; the 3D conv
# and factorised embeddings): what runs on 8 devices.
SHARDED = ("audio", "imu", "video_tubelets")


def on_devices(data: int, fsdp: int) -> dict:
    """Training outputs of the SHARDED towers (masks drawn from the keys) on a (data, fsdp)
    mesh whose parameters are sharded over their embed axes by the logical rules."""
    model, boxed, params = built(*SHARDED)
    config = config_lib.base()
    mesh_config = ml_collections.ConfigDict(dict(config.mesh.to_dict(), data=data, fsdp=fsdp))
    mesh = mesh_lib.make_mesh(mesh_config, jax.devices()[: data * fsdp])
    rules = sharding.as_rules(config.mesh.rules)
    inputs = {n: inputs_of(n) for n in SHARDED}
    with jax.set_mesh(mesh), nn.logical_axis_rules(rules):
        placed = jax.device_put(params, sharding.logical_shardings(boxed, mesh, rules))

        def forward(p, x):
            return model.apply({"params": p}, x, keys_of(3), train=True, with_tokens=SHARDED)

        return jax.device_get(jax.jit(forward)(placed, sharding.global_batch(inputs, mesh)))


@pytest.fixture(scope="module")
def on_one() -> dict:
    return on_devices(1, 1)


@pytest.mark.parametrize("name", list(TOWERS))
def test_shapes_and_parameter_count(name):
    model, boxed, _ = built(name)
    _, _, tokens, stem_params = TOWERS[name]
    x = jax.ShapeDtypeStruct(inputs_of(name).shape, inputs_of(name).dtype)
    out = jax.eval_shape(
        lambda p, x: model.apply({"params": p}, name, x, with_tokens=True, method="encode"),
        state.strip_boxes(boxed),
        x,
    )
    assert out["features"].shape == (B, W)
    assert out["embedding"].shape == (B, E)
    assert out["tokens"].shape == (B, tokens, E)
    # The stem, one encoder block, the final LayerNorm and the projection (no bias).
    expected = stem_params + encoder_block(W, MLP) + 2 * W + W * E
    assert state.count_params(state.strip_boxes(boxed)[name]) == expected


@pytest.mark.parametrize("name", ["audio", "imu", "video"])
def test_several_views_per_example(name):
    """[B, K, ...] inputs (K views or clips of an example) go through as B*K examples."""
    model, boxed, _ = built(name)
    x = inputs_of(name)
    views = jax.ShapeDtypeStruct((B // 2, 2, *x.shape[1:]), x.dtype)
    out = jax.eval_shape(
        lambda p, x: model.apply({"params": p}, name, x, keys_of(0, B // 2), True, method="encode"),
        state.strip_boxes(boxed),
        views,
    )
    assert out["embedding"].shape == (B // 2, 2, E)


@pytest.mark.parametrize("name", SHARDED)
def test_unit_norm_embeddings(name, on_one):
    out = on_one[name]
    np.testing.assert_allclose(np.linalg.norm(out["embedding"], axis=-1), 1.0, rtol=1e-5)
    np.testing.assert_allclose(np.linalg.norm(out["tokens"], axis=-1), 1.0, rtol=1e-5)
    assert np.all(np.isfinite(out["features"]))


def test_eight_devices_equal_one(on_one):
    assert_trees_close(on_devices(4, 2), on_one, rtol=1e-5)


def runs(mask: np.ndarray) -> list[int]:
    """Lengths of the runs of True in a 1-D bool array."""
    edges = np.diff(np.concatenate([[0], mask.astype(int), [0]]))
    return list(np.flatnonzero(edges == -1) - np.flatnonzero(edges == 1))


def test_spec_augment_masks_the_counts_and_widths_asked():
    augment = SpecAugment(time_masks=1, time_mask_width=6, freq_masks=2, freq_mask_width=3)
    masks = np.asarray(jax.jit(jax.vmap(lambda k: augment.mask(k, 63, 32)))(keys_of(0, 400)))
    time_widths, freq_totals = [], []
    for m in masks:
        rows, cols = m.all(axis=1), m.all(axis=0)
        np.testing.assert_array_equal(m, rows[:, None] | cols[None, :])  # whole rows/columns
        assert len(runs(rows)) <= 1 and len(runs(cols)) <= 2
        time_widths.append(rows.sum())
        freq_totals.append(cols.sum())
    assert max(time_widths) == 6 and min(time_widths) == 0  # widths 0..6, inclusive
    assert 3 < max(freq_totals) <= 6  # two spans of up to 3 bins each
    assert masks.all(axis=2).any(axis=0).all()  # every frame is masked in some example


def test_time_masks_mask_whole_patch_spans():
    masks = np.asarray(
        jax.jit(TimeMasks(count=2, max_width=3).mask, static_argnums=1)(keys_of(0, 300), 16)
    )
    assert all(len(runs(m)) <= 2 and m.sum() <= 6 for m in masks)
    assert max(m.sum() for m in masks) > 3 and min(m.sum() for m in masks) == 0


def test_spec_augment_applies_the_mask_to_the_normalised_spectrogram():
    c = model_config("audio").towers.audio
    augment = SpecAugment(2, 10, 1, 6)
    stem = SpectrogramStem(W, mel_config(c), augment=augment, dtype=jnp.bfloat16)

    @jax.jit
    def features(x, keys):
        mask = jax.vmap(lambda k: augment.mask(k, 63, 32))(keys)
        return stem.features(x, None, False), stem.features(x, keys, True), mask

    plain, masked, mask = map(np.asarray, features(jnp.asarray(inputs_of("audio")), keys_of(1)))
    assert mask.any() and not mask.all()
    np.testing.assert_array_equal(masked[mask], 0.0)
    np.testing.assert_array_equal(masked[~mask], plain[~mask])
    # Standardised per utterance, in float32 whatever the tower's dtype.
    assert plain.dtype == np.float32
    np.testing.assert_allclose(plain.mean(axis=(1, 2)), 0.0, atol=1e-5)
    np.testing.assert_allclose(plain.std(axis=(1, 2)), 1.0, rtol=1e-4)


@pytest.fixture(scope="module")
def masking() -> dict:
    """Audio and time-series embeddings in evaluation and in training, with and without
    keys, in one compile. "repeated": the first example 8 times, with keys k1..k4, k1..k4;
    the time series' evaluation batch has an affine change of every channel appended."""
    names = ("audio", "imu")
    model, _, params = built(*names)
    x = {n: inputs_of(n) for n in names}
    x["imu"] = np.concatenate([x["imu"], x["imu"] * 7.0 - 100.0])
    one = {n: np.repeat(v[:1], B, axis=0) for n, v in x.items()}
    keys = keys_of(1, B // 2)

    @jax.jit
    def variants(p):
        def embed(inputs, keys, train):
            out = model.apply({"params": p}, inputs, keys, train)
            return {n: o["embedding"] for n, o in out.items()}

        # The masks the stems must have drawn, from each modality's fold of the keys.
        masks = dict(
            audio=jax.vmap(lambda k: AUDIO_MASKS.mask(k, 63, 32))(modality_keys(keys, "audio")),
            imu=IMU_MASKS.mask(modality_keys(keys, "imu"), 8),
        )
        return dict(
            plain=embed(x, None, False),
            train_without_keys=embed(x, None, True),
            # Keys are one per example; the time series' batch is twice the audio's here.
            eval_with_keys={n: embed({n: v}, keys_of(2, len(v)), False)[n] for n, v in x.items()},
            repeated=embed(one, jnp.concatenate([keys, keys]), True),
            masks=masks,
        )

    return jax.device_get(variants(params))


@pytest.mark.parametrize("name", ["audio", "imu"])
def test_masking_only_in_training_with_keys_and_only_from_the_keys(name, masking):
    v = {k: out[name] for k, out in masking.items()}
    np.testing.assert_array_equal(v["train_without_keys"], v["plain"])
    np.testing.assert_array_equal(v["eval_with_keys"], v["plain"])
    # One example under keys k1..k4, k1..k4: its masks come from its key alone, not from
    # its place in the batch, and outputs differ exactly where the drawn masks differ.
    first, second = v["repeated"][: B // 2], v["repeated"][B // 2 :]
    np.testing.assert_allclose(first, second, rtol=1e-5, atol=1e-6)
    masks = v["masks"].reshape(B // 2, -1)
    assert len({m.tobytes() for m in masks}) > 1 and masks.any()
    for i in range(B // 2):
        expected_plain = not masks[i].any()
        assert np.allclose(first[i], v["plain"][0], atol=1e-4) == expected_plain, i
        for j in range(i):
            same = np.array_equal(masks[i], masks[j])
            assert np.allclose(first[i], first[j], atol=1e-5) == same, (i, j)


def test_series_standardised_per_channel(masking):
    # Per-example, per-channel statistics remove any affine change of a channel.
    plain = masking["plain"]["imu"]
    np.testing.assert_allclose(plain[B:], plain[:B], atol=1e-4)


def test_video_temporal_embeddings_tell_frame_order():
    model, _, params = built("video")
    no_time = jax.tree.map(np.copy, params)
    no_time["video"]["stem"]["temporal_embed"][:] = 0
    x = inputs_of("video")
    still = np.repeat(x[:, :1], 4, axis=1)  # the first frame 4 times
    videos = np.concatenate([x, x[:, [2, 0, 3, 1]], still])  # originals, shuffled, still

    @jax.jit
    def run(p, p0):
        def enc(p, v):
            return model.apply({"params": p}, "video", v, with_tokens=True, method="encode")

        return enc(p, videos), enc(p0, videos[: 2 * B])["embedding"]

    out, without = jax.device_get(run(params, no_time))
    emb = out["embedding"]
    assert not np.allclose(emb[:B], emb[B : 2 * B], atol=1e-3)
    # Identical frames: only the temporal embeddings tell their tokens apart.
    tokens = out["tokens"][2 * B :, 1:].reshape(B, 4, 4, E)
    assert not np.allclose(tokens[:, 0], tokens[:, 1], atol=1e-3)
    # Control: without them, attention over the space-time tokens cannot see the order.
    np.testing.assert_allclose(without[:B], without[B:], rtol=1e-5, atol=1e-6)


def test_video_tubelets_need_whole_tubelets():
    model, _, params = built("video_tubelets")
    with pytest.raises(ValueError, match="tubelet"):
        model.apply({"params": params}, "video_tubelets", inputs_of("video")[:, :3], method="embed")


def test_bfloat16_activations_float32_spectrogram():
    model16, _, params = built("audio", dtype="bfloat16")
    model32 = built("audio")[0]
    x = inputs_of("audio")

    @jax.jit
    def run(p):
        out16, seen = model16.apply(
            {"params": p}, "audio", x, method="encode", capture_intermediates=True
        )
        out32 = model32.apply({"params": p}, "audio", x, method="encode")
        (tokens,) = seen["intermediates"]["audio"]["stem"]["__call__"]
        return out16["embedding"], out32["embedding"], tokens.x

    e16, e32, tokens = run(params)
    assert tokens.dtype == jnp.bfloat16  # what the stem hands the encoder
    assert np.sum(e16 * e32, axis=-1).min() > 0.99  # bf16 activations, close to float32


def test_remat_gives_the_same_gradients():
    name = "imu"
    model, _, params = built(name)
    remat = built(name, remat="full")[0]
    x = inputs_of(name)

    def loss(m):
        def f(p):
            out = m.apply({"params": p}, name, x, method="encode")
            return jnp.sum(out["embedding"] * jnp.arange(E))

        return f

    grads = jax.jit(lambda p: (jax.grad(loss(model))(p), jax.grad(loss(remat))(p)))(params)
    assert_trees_close(*jax.device_get(grads), rtol=1e-5)
