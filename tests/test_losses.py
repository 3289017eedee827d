"""Contrastive losses against float64 NumPy references written from the papers' formulas.

CLIP (Radford et al. 2021): logits L = s X Y^T, loss = mean of the row and column
cross-entropies with the diagonal as targets. SigLIP (Zhai et al. 2023): L = s X Y^T + b,
loss = -1/B sum_ij log sigmoid(z_ij L_ij), z = 2I - 1. Gradients are derived by hand:
dL/dlogits = G, then dX = s G Y, dY = s G^T X, ds = <G, X Y^T>, db = sum G.
"""

import functools

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest
from jax.sharding import AxisType, Mesh, NamedSharding, PartitionSpec

from mmjax.losses import LOSSES, get_loss, sharded_loss
from mmjax.parallel.mesh import AXES, BATCH_AXES

RING_OF = {"softmax_ring": "softmax", "sigmoid_ring": "sigmoid"}
ALL = ["softmax", "sigmoid", "softmax_ring", "sigmoid_ring"]


# ---------------------------------------------------------------- NumPy references (float64)


def _logsumexp(a: np.ndarray, axis: int) -> np.ndarray:
    m = a.max(axis=axis, keepdims=True)
    return (m + np.log(np.exp(a - m).sum(axis=axis, keepdims=True))).squeeze(axis)


def _sigmoid(a: np.ndarray) -> np.ndarray:
    return np.exp(-np.logaddexp(0.0, -a))


def _cross_entropy_rows(logits: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per-row -log softmax(logits)_ii and its gradient softmax - I, in forms that stay
    accurate when the loss is ~1e-20: log(1 + sum_j!=i e^(l_ij - l_ii)), and the diagonal
    p_ii - 1 written as minus the sum of the off-diagonal probabilities."""
    n = logits.shape[0]
    off = ~np.eye(n, dtype=bool)
    delta = logits - np.diag(logits)[:, None]
    neg = np.where(off, delta, -np.inf)
    loss = np.logaddexp(0.0, _logsumexp(neg, 1))
    p = np.where(off, np.exp(neg - loss[:, None]), 0.0)
    return loss, p - np.diag(p.sum(1))


def _metrics(logits: np.ndarray) -> dict[str, float]:
    n = logits.shape[0]
    return {
        "acc_x2y": (logits.argmax(1) == np.arange(n)).mean(),
        "acc_y2x": (logits.argmax(0) == np.arange(n)).mean(),
    }


def _grads(g, x, y, s, d_bias) -> list[tuple[np.ndarray, float]]:
    """(gradient, magnitude) for image, text, scale and bias, from G = dloss/dlogits.

    float32 promises rtol only relative to a magnitude: for an embedding gradient, its
    largest entry (an entry's own relative error grows with the logit scale, as exp
    amplifies the logits' rounding); for d_scale and d_bias, the sum of |terms| (terms of
    both signs nearly cancel on separable batches)."""
    dots = x @ y.T
    dx, dy = s * g @ y, s * g.T @ x
    return [
        (dx, float(np.abs(dx).max())),
        (dy, float(np.abs(dy).max())),
        (np.float64((g * dots).sum()), float(np.abs(g * dots).sum())),
        (np.float64(d_bias), float(np.abs(g).sum()) if d_bias else 0.0),
    ]


def np_clip(x, y, s, b):
    """CLIP loss, metrics and analytic gradients (image, text, scale, bias)."""
    x, y = x.astype(np.float64), y.astype(np.float64)
    n = x.shape[0]
    dots = x @ y.T
    logits = s * dots
    loss_i2t, g_i2t = _cross_entropy_rows(logits)
    loss_t2i, g_t2i = _cross_entropy_rows(logits.T)
    g = (g_i2t + g_t2i.T) / (2 * n)
    return (loss_i2t.mean() + loss_t2i.mean()) / 2, _metrics(logits), _grads(g, x, y, s, 0.0)


def np_siglip(x, y, s, b):
    """SigLIP loss, metrics and analytic gradients (image, text, scale, bias)."""
    x, y = x.astype(np.float64), y.astype(np.float64)
    n = x.shape[0]
    dots = x @ y.T
    logits = s * dots + b
    z = 2 * np.eye(n) - 1
    loss = np.logaddexp(0.0, -z * logits).sum() / n  # -log sigmoid(z l)
    g = -z * _sigmoid(-z * logits) / n
    return loss, _metrics(logits), _grads(g, x, y, s, g.sum())


REFERENCE = {"softmax": np_clip, "softmax_ring": np_clip, "sigmoid": np_siglip}
REFERENCE["sigmoid_ring"] = np_siglip


# ---------------------------------------------------------------- running the JAX losses


def _mesh(n_dev: int) -> Mesh:
    """n devices, split over both batch axes when possible to exercise tuple axis names."""
    data = 2 if n_dev >= 4 else 1
    devices = np.array(jax.devices()[:n_dev]).reshape(data, n_dev // data, 1)
    return Mesh(devices, AXES, axis_types=(AxisType.Auto,) * len(AXES))


@functools.cache
def _compiled(name: str, n_dev: int, options: tuple = ()):
    mesh = _mesh(n_dev)
    fn = sharded_loss(get_loss(name, dict(options)), mesh)
    vg = jax.value_and_grad(lambda *a: fn(*a), argnums=(0, 1, 2, 3), has_aux=True)
    batch = NamedSharding(mesh, PartitionSpec(BATCH_AXES))
    return jax.jit(vg), batch


def run_loss(name, x, y, s, b, n_dev=8, **options):
    """(loss, metrics, grads) of loss `name` on `n_dev` devices, as NumPy."""
    fn, batch = _compiled(name, n_dev, tuple(sorted(options.items())))
    args = (
        jax.device_put(x, batch),
        jax.device_put(y, batch),
        jnp.float32(s),
        jnp.float32(b),
    )
    (loss, metrics), grads = fn(*args)
    return float(loss), {k: float(v) for k, v in metrics.items()}, [np.asarray(g) for g in grads]


def _normalise(a: np.ndarray) -> np.ndarray:
    return (a / np.linalg.norm(a, axis=-1, keepdims=True)).astype(np.float32)


def make_batch(case: str, n: int = 64, d: int = 32, seed: int = 0):
    """Embeddings, scale and bias for a named regime (losses for n=64, d=32 in comments)."""
    rng = np.random.default_rng(seed)
    x = _normalise(rng.normal(size=(n, d)))
    noise = rng.normal(size=(n, d)) / np.sqrt(d)
    if case == "typical":  # initialisation: scale 10, SigLIP bias -10 (5.6, 10.1)
        return x, _normalise(rng.normal(size=(n, d))), 10.0, -10.0
    if case == "hot":  # the clipped maximum scale 100 on correlated pairs (0.58, 1.8)
        return x, _normalise(x + 1.5 * noise), 100.0, -45.0
    if case == "separable":  # nearly separable at scale 100 (5e-3, 0.33)
        return x, _normalise(x + 1.1 * noise), 100.0, -55.0
    if case == "extreme":  # far apart at scale 100 (1e-16, 2e-3)
        return x, _normalise(x + 0.5 * noise), 100.0, -60.0
    raise ValueError(case)


def assert_matches(name, got, want, *, rtol=1e-5, tiny_atol=1e-6):
    """Loss and gradients within rtol, plus `tiny_atol` where the loss is < 0.1. For a
    gradient, rtol bounds the error relative to the entry or to the gradient's magnitude
    (see `_grads`), whichever is larger."""
    (loss, metrics, grads), (ref_loss, ref_metrics, ref_grads) = got, want
    assert np.isfinite(loss) and all(np.isfinite(g).all() for g in grads), name
    atol = tiny_atol if ref_loss < 0.1 else 0.0
    np.testing.assert_allclose(loss, ref_loss, rtol=rtol, atol=atol, err_msg=f"{name} loss")
    for what, g, (r, mag) in zip(["d_image", "d_text", "d_scale", "d_bias"], grads, ref_grads):
        err = np.abs(g - r)
        bound = atol + rtol * np.maximum(np.abs(r), mag)
        worst = float(np.max(err - bound))
        assert worst <= 0, f"{name} {what}: max |err| {err.max():.3g}, over bound by {worst:.3g}"
    for k in ("acc_x2y", "acc_y2x"):
        assert metrics[k] == pytest.approx(ref_metrics[k]), f"{name} {k}"


# ---------------------------------------------------------------- tests


@pytest.mark.parametrize("case", ["typical", "hot", "separable", "extreme"])
@pytest.mark.parametrize("name", ALL)
def test_matches_numpy_reference(name: str, case: str) -> None:
    x, y, s, b = make_batch(case)
    options = {"tile_size": 4, "chunk_size": 4} if name in RING_OF else {}
    got = run_loss(name, x, y, s, b, **options)
    assert_matches(name, got, REFERENCE[name](x, y, s, b))


@pytest.mark.parametrize("name", ["softmax", *RING_OF])
def test_losses_stay_relatively_exact_when_tiny(name: str) -> None:
    """The softmax losses keep the positive logit apart from the negatives' logsumexp, so
    a 1e-16 loss and its gradients come out to rtol, with no absolute floor."""
    x, y, s, b = make_batch("extreme")
    options = {"tile_size": 8, "chunk_size": 4} if name in RING_OF else {}
    got = run_loss(name, x, y, s, b, **options)
    assert_matches(name, got, REFERENCE[name](x, y, s, b), tiny_atol=0.0)


def _assert_same(name, got, want, rtol=1e-5):
    """Ring against all-gather: loss, metrics, and gradients to rtol of their largest entry."""
    assert got[0] == pytest.approx(want[0], rel=rtol), name
    assert got[1] == pytest.approx(want[1], rel=rtol), name
    for g, w in zip(got[2], want[2]):
        np.testing.assert_allclose(g, w, rtol=rtol, atol=rtol * float(np.abs(w).max()))


@pytest.mark.parametrize("n_dev", [1, 2, 4, 8])
@pytest.mark.parametrize("ring", sorted(RING_OF))
def test_ring_equals_all_gather(ring: str, n_dev: int) -> None:
    x, y, s, b = make_batch("hot", n=96)
    got = run_loss(ring, x, y, s, b, n_dev=n_dev, tile_size=4, chunk_size=8)
    _assert_same(ring, got, run_loss(RING_OF[ring], x, y, s, b, n_dev=n_dev))


@pytest.mark.parametrize("ring", sorted(RING_OF))
def test_tile_and_chunk_need_not_divide_the_local_batch(ring: str) -> None:
    x, y, s, b = make_batch("hot", n=8 * 13)  # 13 rows per device
    want = REFERENCE[ring](x, y, s, b)
    for tile, chunk in [(5, 7), (13, 4), (6, 100)]:  # ragged, exact, capped at 13
        assert_matches(ring, run_loss(ring, x, y, s, b, tile_size=tile, chunk_size=chunk), want)


@pytest.mark.parametrize("bad", [0, -4, 2.5, True])
def test_bad_tile_size_is_refused_by_name(bad) -> None:
    x = jnp.zeros((16, 8))
    for option in ("tile_size", "chunk_size"):
        with pytest.raises(ValueError, match=option):
            LOSSES.get("softmax_ring")(x, x, 1.0, 0.0, axis_name="data", **{option: bad})


def test_get_loss_passes_the_ring_options() -> None:
    config = ml_collections.ConfigDict(
        {"name": "sigmoid_ring", "tile_size": 8, "chunk_size": 16, "other": 1}
    )
    loss = get_loss(config.name, config)
    assert loss.fn.keywords == {"tile_size": 8, "chunk_size": 16}
    assert loss.inputs == () and set(loss.options) == {"tile_size", "chunk_size"}
    assert get_loss("sigmoid", config).fn.keywords == {}


def test_bfloat16_inputs_give_float32_loss_and_matching_gradients() -> None:
    x, y, s, b = make_batch("typical")
    x16, y16 = jnp.asarray(x, jnp.bfloat16), jnp.asarray(y, jnp.bfloat16)
    x32, y32 = np.asarray(x16, np.float32), np.asarray(y16, np.float32)
    for name in RING_OF:
        loss, _, grads = run_loss(name, x16, y16, s, b, tile_size=4, chunk_size=4)
        want = REFERENCE[name](x32, y32, s, b)
        assert loss == pytest.approx(want[0], rel=1e-5)
        assert grads[0].dtype == np.dtype(jnp.bfloat16)
        np.testing.assert_allclose(grads[0].astype(np.float32), want[2][0][0], rtol=1e-2, atol=1e-3)


# ---------------------------------------------------------------- memory (compile only)


def temp_bytes(name: str, global_batch: int, width: int, n_dev: int, **options) -> int:
    """Per-device temporary memory of forward+backward, from the compiled program alone."""
    mesh = _mesh(n_dev)
    fn = sharded_loss(get_loss(name, options), mesh)
    vg = jax.value_and_grad(lambda *a: fn(*a), argnums=(0, 1, 2, 3), has_aux=True)
    emb = jax.ShapeDtypeStruct(
        (global_batch, width), jnp.float32, sharding=NamedSharding(mesh, PartitionSpec(BATCH_AXES))
    )
    scalar = jax.ShapeDtypeStruct((), jnp.float32, sharding=NamedSharding(mesh, PartitionSpec()))
    compiled = jax.jit(vg).lower(emb, emb, scalar, scalar).compile()
    return compiled.memory_analysis().temp_size_in_bytes


@pytest.mark.parametrize("ring", sorted(RING_OF))
def test_ring_memory_at_a_million(ring: str) -> None:
    """Global batch 2^20, width 512, 8 devices: all-gather softmax needs ~1.5 TiB."""
    assert temp_bytes(ring, 2**20, 512, 8) <= 256 * 2**20


@pytest.mark.parametrize("ring", sorted(RING_OF))
def test_ring_memory_does_not_grow_with_devices(ring: str) -> None:
    sizes = [temp_bytes(ring, 4096 * n, 512, n) for n in (2, 4, 8)]
    assert max(sizes) <= 1.05 * min(sizes), sizes
