"""Multi-positive (SupCon) losses against a float64 NumPy reference written from the paper.

Khosla et al. 2020, eq. 2 ("L_out"), cross-modal: with logits l = s X Y^T and positives
P(i) = {j : y_labels[j] == x_labels[i]},

    loss_x2y_i = -1/|P(i)| sum_{p in P(i)} log softmax(l_i)[p],

symmetrically for y -> x; rows without a positive are left out; loss = mean of the two
directions' means. Gradient, derived by hand: dloss_i/dl_ij = softmax(l_i)_j - [j in P(i)]
/ |P(i)|, each direction weighted by 1 / (2 * its rows with a positive).
"""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.sharding import NamedSharding, PartitionSpec

from mmjax.losses import get_loss, sharded_loss
from mmjax.losses.registry import describe
from mmjax.parallel.mesh import BATCH_AXES
from tests.test_losses import _grads, _mesh, _normalise, assert_matches, make_batch, np_clip

NAMES = ["multi_positive", "multi_positive_ring"]
RING = {"tile_size": 4, "chunk_size": 8}


# ---------------------------------------------------------------- NumPy reference (float64)


def _lse(a: np.ndarray, axis: int) -> np.ndarray:
    m = np.max(a, axis=axis, keepdims=True)
    m = np.where(np.isfinite(m), m, 0.0)
    with np.errstate(divide="ignore"):
        return (m + np.log(np.exp(a - m).sum(axis=axis, keepdims=True))).squeeze(axis)


def _supcon_rows(logits: np.ndarray, positive: np.ndarray):
    """Per row: loss, gradient, top-1 is a positive, has a positive.

    -log softmax(l)[p] is written log(1 + sum_{j != p} exp(l_j - l_p)), and for a positive
    p_ip - 1/|P| as expm1(-nll_p) + (1 - 1/|P|): the same quantities, in forms that keep
    float64's relative precision when the loss is ~1e-16.
    """
    n, m = logits.shape
    loss, grad = np.zeros(n), np.zeros((n, m))
    for i in range(n):
        row, pos = logits[i], positive[i]
        if not pos.any():
            continue
        delta = row[None, :] - row[pos][:, None]  # [|P|, m]: l_j - l_p
        delta[np.arange(pos.sum()), np.flatnonzero(pos)] = -np.inf  # j != p
        nll = np.logaddexp(0.0, _lse(delta, 1))
        loss[i] = nll.mean()
        grad[i] = np.exp(row - _lse(row, 0))
        grad[i, pos] = np.expm1(-nll) + (1.0 - 1.0 / pos.sum())
    valid = positive.any(1)
    correct = valid & positive[np.arange(n), logits.argmax(1)]
    return loss, grad, correct, valid


def np_supcon(x, y, s, x_labels, y_labels):
    """Loss, metrics and gradients (x, y, scale, bias) of the symmetric SupCon loss."""
    x, y = x.astype(np.float64), y.astype(np.float64)
    logits = s * x @ y.T
    same = x_labels[:, None] == y_labels[None, :]
    lx, gx, cx, vx = _supcon_rows(logits, same)
    ly, gy, cy, vy = _supcon_rows(logits.T, same.T)
    nx, ny = max(vx.sum(), 1), max(vy.sum(), 1)
    g = gx / (2 * nx) + gy.T / (2 * ny)
    metrics = {
        "loss_x2y": lx.sum() / nx,
        "loss_y2x": ly.sum() / ny,
        "acc_x2y": cx.sum() / nx,
        "acc_y2x": cy.sum() / ny,
        "no_positive_x2y": float((~vx).sum()),
        "no_positive_y2x": float((~vy).sum()),
    }
    loss = (metrics["loss_x2y"] + metrics["loss_y2x"]) / 2
    return loss, metrics, _grads(g, x, y, s, 0.0)


# ---------------------------------------------------------------- batches and runs


def labelled_batch(pattern: str, regime: str = "hot", n: int = 64, k: int = 1, seed: int = 0):
    """x [n], y [k n] (caption c of image i at row k i + c), scale, and labels.

    patterns: "distinct" (only the pair itself), "one_class", "classes" (8 random
    classes), "groups" (y_labels = repeat(x_labels, k): an image and its k captions),
    "unmatched" (random classes, some of which only one modality has).
    """
    x, y, s, _ = make_batch(regime, n=n, seed=seed)
    rng = np.random.default_rng(seed + 1)
    if k > 1:  # k noisy views of each x row, at the regime's noise level
        noise = rng.normal(size=(n, k, x.shape[1])) * np.linalg.norm(y - x, axis=1)[:, None, None]
        y = _normalise((x[:, None, :] + noise / np.sqrt(x.shape[1])).reshape(n * k, -1))
    ids = np.arange(n)
    if pattern == "distinct":
        xl = ids
    elif pattern == "one_class":
        xl = np.zeros(n)
    elif pattern in ("classes", "unmatched"):
        xl = rng.integers(0, 8, size=n)
    elif pattern == "groups":
        xl = rng.permutation(n)
    else:
        raise ValueError(pattern)
    yl = np.repeat(xl, k)
    if pattern == "unmatched":  # classes 8, 9 only in x, 10 only in y
        xl = np.where(rng.random(n) < 0.2, 8 + rng.integers(0, 2, size=n), xl)
        yl = np.where(rng.random(n * k) < 0.2, 10, yl)
    return x, y, s, xl.astype(np.int32), yl.astype(np.int32)


@functools.cache
def _compiled(name: str, n_dev: int, options: tuple):
    mesh = _mesh(n_dev)
    fn = sharded_loss(get_loss(name, dict(options)), mesh)
    vg = jax.value_and_grad(lambda *a, **kw: fn(*a, **kw), argnums=(0, 1, 2, 3), has_aux=True)
    return jax.jit(vg), NamedSharding(mesh, PartitionSpec(BATCH_AXES))


def run(name, x, y, s, xl, yl, n_dev=8, **options):
    """(loss, metrics, grads) on `n_dev` devices, as NumPy; ring defaults to small blocks."""
    if name.endswith("_ring"):
        options = {**RING, **options}
    fn, batch = _compiled(name, n_dev, tuple(sorted(options.items())))
    put = functools.partial(jax.device_put, device=batch)
    (loss, metrics), grads = fn(
        put(x), put(y), jnp.float32(s), jnp.float32(0.0), x_labels=put(xl), y_labels=put(yl)
    )
    return float(loss), {k: float(v) for k, v in metrics.items()}, [np.asarray(g) for g in grads]


def check(name, got, want, **kw):
    """`assert_matches` (loss, gradients, accuracies; rtol 1e-5), plus the other metrics."""
    assert_matches(name, got, want, **kw)
    for key in ("no_positive_x2y", "no_positive_y2x"):
        assert got[1][key] == want[1][key], key
    for key in ("loss_x2y", "loss_y2x"):
        np.testing.assert_allclose(got[1][key], want[1][key], rtol=1e-5, err_msg=key)


# ---------------------------------------------------------------- tests

CASES = [
    ("distinct", "hot", 1),
    ("one_class", "hot", 1),
    ("classes", "typical", 1),
    ("classes", "hot", 1),
    ("groups", "hot", 4),  # 1-to-K: 64 x rows, 256 y rows
    ("unmatched", "hot", 2),
]


@pytest.mark.parametrize(("pattern", "regime", "k"), CASES)
@pytest.mark.parametrize("name", NAMES)
def test_matches_numpy_reference(name: str, pattern: str, regime: str, k: int) -> None:
    x, y, s, xl, yl = labelled_batch(pattern, regime, k=k)
    check(name, run(name, x, y, s, xl, yl), np_supcon(x, y, s, xl, yl))


@pytest.mark.parametrize("regime", ["separable", "extreme"])
@pytest.mark.parametrize("name", NAMES)
def test_distinct_labels_are_infonce_even_when_tiny(name: str, regime: str) -> None:
    """With no positive but the pair itself it is CLIP's InfoNCE (the `softmax` reference),
    to rtol 1e-5 with no absolute floor at scale 100, losses 5e-3 and 1e-16."""
    x, y, s, xl, yl = labelled_batch("distinct", regime)
    got = run(name, x, y, s, xl, yl, tile_size=8) if "ring" in name else run(name, x, y, s, xl, yl)
    assert_matches(name, got, np_clip(x, y, s, 0.0), tiny_atol=0.0)
    check(name, got, np_supcon(x, y, s, xl, yl), tiny_atol=0.0)


def test_no_positive_rows_are_left_out_and_counted() -> None:
    x, y, s, xl, yl = labelled_batch("unmatched", k=2)
    want = np_supcon(x, y, s, xl, yl)
    assert want[1]["no_positive_x2y"] > 0 and want[1]["no_positive_y2x"] > 0
    for name in NAMES:  # they still serve as negatives of the other rows
        check(name, run(name, x, y, s, xl, yl), want)
    # No row has a positive at all: loss 0, gradients 0, every row counted.
    for name in NAMES:
        loss, metrics, grads = run(name, x, y, s, xl, yl + 100)
        assert loss == 0.0 and all(np.all(g == 0) for g in grads), name
        assert metrics["no_positive_x2y"] == 64 and metrics["no_positive_y2x"] == 128, name


@pytest.mark.parametrize("n_dev", [1, 2, 4, 8])
def test_same_on_any_number_of_devices_and_ring_equals_all_gather(n_dev: int) -> None:
    x, y, s, xl, yl = labelled_batch("groups", n=48, k=2)  # 6 x, 12 y rows per device on 8
    want = np_supcon(x, y, s, xl, yl)
    gathered = run("multi_positive", x, y, s, xl, yl, n_dev=n_dev)
    ring = run("multi_positive_ring", x, y, s, xl, yl, n_dev=n_dev, tile_size=4, chunk_size=5)
    check("multi_positive", gathered, want)
    check("multi_positive_ring", ring, want)
    assert ring[0] == pytest.approx(gathered[0], rel=1e-6)
    for g, w in zip(ring[2], gathered[2]):
        np.testing.assert_allclose(g, w, rtol=1e-5, atol=1e-5 * float(np.abs(w).max()))


def test_tile_and_chunk_need_not_divide_the_local_batch() -> None:
    x, y, s, xl, yl = labelled_batch("classes", n=8 * 13, k=2)  # 13 x, 26 y rows per device
    want = np_supcon(x, y, s, xl, yl)
    for tile, chunk in [(5, 7), (13, 4), (6, 100)]:  # ragged, exact, capped at 26
        got = run("multi_positive_ring", x, y, s, xl, yl, tile_size=tile, chunk_size=chunk)
        check("multi_positive_ring", got, want)


def test_declares_labels_as_inputs_and_block_sizes_as_options() -> None:
    assert describe("multi_positive") == (("x_labels", "y_labels"), {})
    inputs, options = describe("multi_positive_ring")
    assert inputs == ("x_labels", "y_labels") and set(options) == {"tile_size", "chunk_size"}
    with pytest.raises(ValueError, match="inputs"):
        sharded_loss(get_loss("multi_positive"), _mesh(1))(*[jnp.zeros((8, 4))] * 2, 1.0, 0.0)


def test_bfloat16_inputs_give_float32_loss_and_matching_gradients() -> None:
    x, y, s, xl, yl = labelled_batch("classes", "typical")
    x16, y16 = jnp.asarray(x, jnp.bfloat16), jnp.asarray(y, jnp.bfloat16)
    want = np_supcon(np.asarray(x16, np.float32), np.asarray(y16, np.float32), s, xl, yl)
    loss, _, grads = run("multi_positive_ring", x16, y16, s, xl, yl)
    assert loss == pytest.approx(want[0], rel=1e-5)
    assert grads[0].dtype == np.dtype(jnp.bfloat16)
    np.testing.assert_allclose(grads[0].astype(np.float32), want[2][0][0], rtol=1e-2, atol=1e-3)


# ---------------------------------------------------------------- memory (compile only)


def temp_bytes(name: str, global_batch: int, width: int, n_dev: int, k: int = 1) -> int:
    """Per-device temporary memory of forward+backward, from the compiled program alone."""
    mesh = _mesh(n_dev)
    fn = sharded_loss(get_loss(name), mesh)
    vg = jax.value_and_grad(lambda *a, **kw: fn(*a, **kw), argnums=(0, 1, 2, 3), has_aux=True)
    batch, rep = (
        NamedSharding(mesh, PartitionSpec(BATCH_AXES)),
        NamedSharding(mesh, PartitionSpec()),
    )

    def arg(shape, dtype, sharding=batch):
        return jax.ShapeDtypeStruct(shape, dtype, sharding=sharding)

    n_y = global_batch * k
    compiled = (
        jax.jit(vg)
        .lower(
            arg((global_batch, width), jnp.float32),
            arg((n_y, width), jnp.float32),
            arg((), jnp.float32, rep),
            arg((), jnp.float32, rep),
            x_labels=arg((global_batch,), jnp.int32),
            y_labels=arg((n_y,), jnp.int32),
        )
        .compile()
    )
    return compiled.memory_analysis().temp_size_in_bytes


def test_ring_memory_at_a_million() -> None:
    """Global batch 2^20, width 512, 8 devices: the all-gather form needs ~1.5 TiB."""
    assert temp_bytes("multi_positive_ring", 2**20, 512, 8) <= 256 * 2**20
