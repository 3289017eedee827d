"""`filip` against a float64 NumPy reference written from FILIP's formula (Yao et al. 2021).

s_ij = 1/|x_i| sum_k max_r <x_ik, y_jr>, s'_ij = 1/|y_j| sum_r max_k <x_ik, y_jr> over valid
tokens; loss = mean of CE(softmax_j(scale s_ij), i) and CE(softmax_i(scale s'_ij), j). The
gradients are derived by hand: with G = dloss/dlogits, dloss/d<x_ik, y_jr> is
scale G_ij / |x_i| where r is k's best match in y_j, plus scale G'_ij / |y_j| where k is
r's best match in x_i; then through each token's L2 normalisation, (I - u u^T) g / |t|.
"""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.sharding import NamedSharding, PartitionSpec

from mmjax.losses import get_loss, sharded_loss
from mmjax.parallel.mesh import BATCH_AXES
from tests.test_losses import _cross_entropy_rows, _mesh

# ---------------------------------------------------------------- NumPy reference (float64)


def _unit(t: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    t = t.astype(np.float64)
    n = np.linalg.norm(t, axis=-1, keepdims=True)
    return t / n, n


def _through_norm(g: np.ndarray, u: np.ndarray, n: np.ndarray) -> np.ndarray:
    """Gradient w.r.t. a raw token t from that w.r.t. u = t / |t|."""
    return (g - u * (u * g).sum(-1, keepdims=True)) / n


def np_filip(xt, yt, mx, my, s):
    """FILIP loss, metrics and gradients (x tokens, y tokens, scale)."""
    (x, nx), (y, ny) = _unit(xt), _unit(yt)
    b = len(x)
    dots = np.einsum("ikd,jrd->ijkr", x, y)  # [B, B, Nx, Ny]
    cx, cy = mx.sum(1), my.sum(1)
    to_y = np.where(my[None, :, None, :], dots, -np.inf)
    best_r = to_y.argmax(3)  # [B, B, Nx]: each x token's best y token
    sim = (np.where(mx[:, None, :], to_y.max(3), 0.0)).sum(2) / cx[:, None]
    to_x = np.where(mx[:, None, :, None], dots, -np.inf)
    best_k = to_x.argmax(2)  # [B, B, Ny]: each y token's best x token
    sim_rev = (np.where(my[None, :, :], to_x.max(2), 0.0)).sum(2) / cy[None, :]
    loss_x2y, g = _cross_entropy_rows(s * sim)
    loss_y2x, g_rev = _cross_entropy_rows(s * sim_rev.T)
    g, g_rev = g / (2 * b), g_rev.T / (2 * b)
    pick_r = best_r[..., None] == np.arange(y.shape[1])
    pick_k = best_k[:, :, None, :] == np.arange(x.shape[1])[None, None, :, None]
    c = (s * g)[:, :, None, None] * (mx / cx[:, None])[:, None, :, None] * pick_r
    c = c + (s * g_rev)[:, :, None, None] * (my / cy[:, None])[None, :, None, :] * pick_k
    dx = _through_norm(np.einsum("ijkr,jrd->ikd", c, y), x, nx)
    dy = _through_norm(np.einsum("ijkr,ikd->jrd", c, x), y, ny)
    ds = (g * sim).sum() + (g_rev * sim_rev).sum()
    metrics = {
        "loss_x2y": loss_x2y.mean(),
        "loss_y2x": loss_y2x.mean(),
        "acc_x2y": (sim.argmax(1) == np.arange(b)).mean(),
        "acc_y2x": (sim_rev.argmax(0) == np.arange(b)).mean(),
    }
    ds_mag = np.abs(g * sim).sum() + np.abs(g_rev * sim_rev).sum()
    return (loss_x2y.mean() + loss_y2x.mean()) / 2, metrics, (dx, dy, (ds, ds_mag))


# ---------------------------------------------------------------- running the loss


@functools.cache
def _compiled(n_dev: int, options: tuple = ()):
    mesh = _mesh(n_dev)
    fn = sharded_loss(get_loss("filip", dict(options)), mesh)
    vg = jax.value_and_grad(
        lambda x, y, s, b, inputs: fn(x, y, s, b, **inputs),
        argnums=(0, 1, 2, 3, 4),
        has_aux=True,
        allow_int=True,
    )
    return jax.jit(vg), NamedSharding(mesh, PartitionSpec(BATCH_AXES))


def run_filip(batch: dict, s: float, n_dev: int = 8, **options):
    fn, sharding = _compiled(n_dev, tuple(sorted(options.items())))
    b, d = batch["x_tokens"].shape[0], batch["x_tokens"].shape[-1]
    pooled = jax.device_put(np.zeros((b, d), np.float32), sharding)
    inputs = {k: jax.device_put(v, sharding) for k, v in batch.items()}
    (loss, metrics), grads = fn(pooled, pooled, jnp.float32(s), jnp.float32(0.0), inputs)
    return float(loss), {k: float(v) for k, v in metrics.items()}, grads


def make_tokens(case: str, n: int = 32, nx: int = 6, ny: int = 5, d: int = 8, seed: int = 0):
    """Raw (unnormalised) tokens with padding, and the scale, for a named regime."""
    rng = np.random.default_rng(seed)
    xt = rng.normal(size=(n, nx, d)) * rng.uniform(0.5, 2.0, size=(n, nx, 1))
    # Each y token is a noisy copy of a token of its own x, so positives score high.
    pick = rng.integers(0, nx, size=(n, ny))
    noise = {"typical": 3.0, "hot": 0.7}[case]
    yt = xt[np.arange(n)[:, None], pick] + noise * rng.normal(size=(n, ny, d))
    mx = np.arange(nx)[None, :] < rng.integers(1, nx + 1, size=(n, 1))  # ragged lengths
    my = np.arange(ny)[None, :] < rng.integers(1, ny + 1, size=(n, 1))
    mx[0], my[1] = True, np.arange(ny) == 0  # a full x, a one-token y
    s = {"typical": 10.0, "hot": 100.0}[case]
    batch = {"x_tokens": xt, "y_tokens": yt, "x_token_mask": mx, "y_token_mask": my}
    batch = {k: v.astype(np.float32) if v.dtype == np.float64 else v for k, v in batch.items()}
    return batch, s


def assert_filip_matches(got, want, rtol: float = 1e-5) -> None:
    """Loss to rtol (plus 1e-6 when < 0.1); each gradient to rtol of its largest entry."""
    (loss, metrics, grads), (ref_loss, ref_metrics, (dx, dy, (ds, ds_mag))) = got, want
    atol = 1e-6 if ref_loss < 0.1 else 0.0
    np.testing.assert_allclose(loss, ref_loss, rtol=rtol, atol=atol)
    for k in ("loss_x2y", "loss_y2x"):
        np.testing.assert_allclose(metrics[k], ref_metrics[k], rtol=rtol, atol=atol, err_msg=k)
    for k in ("acc_x2y", "acc_y2x"):
        assert metrics[k] == pytest.approx(ref_metrics[k]), k
    for name, g, r in [
        ("x_tokens", grads[4]["x_tokens"], dx),
        ("y_tokens", grads[4]["y_tokens"], dy),
    ]:
        np.testing.assert_allclose(g, r, rtol=rtol, atol=rtol * np.abs(r).max(), err_msg=name)
    np.testing.assert_allclose(grads[2], ds, atol=rtol * ds_mag, err_msg="scale")
    # The pooled embeddings and the bias are unused; the masks take no gradient.
    assert not np.any(grads[0]) and not np.any(grads[1]) and float(grads[3]) == 0.0
    for k in ("x_token_mask", "y_token_mask"):
        assert grads[4][k].dtype == jax.dtypes.float0


# ---------------------------------------------------------------- tests


@pytest.mark.parametrize("case", ["typical", "hot"])
def test_matches_numpy_reference(case: str) -> None:
    batch, s = make_tokens(case)
    want = np_filip(
        batch["x_tokens"], batch["y_tokens"], batch["x_token_mask"], batch["y_token_mask"], s
    )
    # Tiles of 3 of the 4 local rows and chunks of 5 of the 32 columns: both ragged.
    assert_filip_matches(run_filip(batch, s, tile_size=3, chunk_size=5), want)


@pytest.mark.parametrize("n_dev", [1, 2, 4, 8])
def test_same_on_any_number_of_devices(n_dev: int) -> None:
    batch, s = make_tokens("hot", n=24)
    want = np_filip(
        batch["x_tokens"], batch["y_tokens"], batch["x_token_mask"], batch["y_token_mask"], s
    )
    assert_filip_matches(run_filip(batch, s, n_dev=n_dev, tile_size=2, chunk_size=4), want)


def test_padding_values_do_not_matter() -> None:
    batch, s = make_tokens("typical")
    got = run_filip(batch, s, tile_size=3, chunk_size=5)
    rng = np.random.default_rng(1)
    noisy = dict(batch)
    for k, m in (("x_tokens", "x_token_mask"), ("y_tokens", "y_token_mask")):
        noisy[k] = np.where(batch[m][..., None], batch[k], 50 * rng.normal(size=batch[k].shape))
        noisy[k] = noisy[k].astype(np.float32)
    again = run_filip(noisy, s, tile_size=3, chunk_size=5)
    assert again[0] == pytest.approx(got[0], rel=1e-6)
    for k, m in (("x_tokens", "x_token_mask"), ("y_tokens", "y_token_mask")):
        assert not np.any(np.asarray(again[2][4][k])[~batch[m]])  # padding: no gradient


def test_unnormalised_option_uses_tokens_as_given() -> None:
    batch, s = make_tokens("typical")
    unit = dict(batch)
    for k in ("x_tokens", "y_tokens"):
        unit[k] = _unit(batch[k])[0].astype(np.float32)
    a = run_filip(batch, s, tile_size=3, chunk_size=5)
    b = run_filip(unit, s, tile_size=3, chunk_size=5, normalize_tokens=False)
    assert a[0] == pytest.approx(b[0], rel=1e-5)


# ---------------------------------------------------------------- memory (compile only)


def _naive_filip(x, y, scale, bias, *, axis_name, x_tokens, y_tokens, x_token_mask, y_token_mask):
    """FILIP with the whole [b_local, B, Nx, Ny] token-score array: what tiling avoids."""
    del x, y, bias
    yg = jax.lax.all_gather(y_tokens, axis_name, tiled=True)
    myg = jax.lax.all_gather(y_token_mask, axis_name, tiled=True)
    dots = jnp.einsum("ikd,jrd->ijkr", x_tokens, yg)
    best = jnp.where(myg[None, :, None, :], dots, -jnp.inf).max(3)
    sim = jnp.where(x_token_mask[:, None, :], best, 0.0).sum(2) / x_token_mask.sum(1)[:, None]
    return jax.lax.psum(jax.nn.logsumexp(scale * sim, axis=1).sum(), axis_name), {}


def _filip_temp_bytes(global_batch: int, loss_fn=None, nx=50, ny=16, d=64, n_dev=8) -> int:
    """Per-device temporary memory of forward+backward w.r.t. the tokens and the scale."""
    mesh = _mesh(n_dev)
    loss = get_loss("filip", {"tile_size": 8, "chunk_size": 8})
    if loss_fn is not None:
        loss = type(loss)("naive", loss_fn, loss.inputs, ())
    fn = sharded_loss(loss, mesh)
    vg = jax.grad(lambda s, t: fn(t[0], t[0], s, s, **t[1])[0], argnums=(0, 1), allow_int=True)
    batch = NamedSharding(mesh, PartitionSpec(BATCH_AXES))
    spec = functools.partial(jax.ShapeDtypeStruct, sharding=batch)
    tokens = {
        "x_tokens": spec((global_batch, nx, d), jnp.float32),
        "y_tokens": spec((global_batch, ny, d), jnp.float32),
        "x_token_mask": spec((global_batch, nx), jnp.bool_),
        "y_token_mask": spec((global_batch, ny), jnp.bool_),
    }
    pooled = spec((global_batch, d), jnp.float32)
    scalar = jax.ShapeDtypeStruct((), jnp.float32, sharding=NamedSharding(mesh, PartitionSpec()))
    compiled = jax.jit(vg).lower(scalar, (pooled, tokens)).compile()
    return compiled.memory_analysis().temp_size_in_bytes


def test_memory_grows_linearly_with_the_global_batch() -> None:
    """Doubling the global batch (8 devices, so b_local doubles too) at most doubles the
    tiled loss's temporary memory; an untiled one, [b_local, B, Nx, Ny], would quadruple
    (`_naive_filip`: 408 MiB -> 1.6 GiB; this loss: 5.4 MiB -> 10.3 MiB)."""
    small, large = _filip_temp_bytes(512), _filip_temp_bytes(1024)
    one_score_array = 64 * 512 * 50 * 16 * 4  # [b_local, B, Nx, Ny] float32 at 512
    assert large <= 2.1 * small, (small, large)
    assert small < one_score_array / 10, (small, one_score_array)
