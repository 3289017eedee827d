"""`matryoshka` against float64 NumPy references (Kusupati et al. 2022, MRL).

loss = sum_m w_m L(u_m(x), u_m(y), s, b) with u_m(a) = a[:, :m] / |a[:, :m]| and L the
CLIP or SigLIP reference of tests/test_losses.py; the gradient of each term is pulled back
by hand through the prefix and its normalisation, (I - u u^T) g / |a[:, :m]|.
"""

import jax.numpy as jnp
import numpy as np
import pytest

from mmjax.losses import LOSSES, get_loss
from mmjax.losses.matryoshka import mrl_dims
from tests.test_losses import RING_OF, assert_matches, make_batch, np_clip, np_siglip, run_loss

REFERENCE = {"softmax": np_clip, "sigmoid": np_siglip}


def _prefix(a: np.ndarray, m: int) -> tuple[np.ndarray, np.ndarray]:
    p = a[:, :m].astype(np.float64)
    n = np.linalg.norm(p, axis=1, keepdims=True)
    return p / n, n


def np_matryoshka(x, y, s, b, dims, weights, base: str):
    """Weighted sum of the base reference over renormalised prefixes, with its gradients."""
    ref = REFERENCE[RING_OF.get(base, base)]
    loss, metrics = 0.0, {}
    dx, dy = np.zeros(x.shape), np.zeros(y.shape)
    ds = db = ds_mag = db_mag = 0.0
    for m, w in zip(dims, weights):
        (ux, nx), (uy, ny) = _prefix(x, m), _prefix(y, m)
        loss_m, metrics_m, ((gx, _), (gy, _), (gs, ms), (gb, mb)) = ref(ux, uy, s, b)
        loss += w * loss_m
        metrics.update({f"{k}@{m}": v for k, v in metrics_m.items()})
        metrics[f"loss@{m}"] = loss_m
        dx[:, :m] += w * (gx - ux * (ux * gx).sum(1, keepdims=True)) / nx
        dy[:, :m] += w * (gy - uy * (uy * gy).sum(1, keepdims=True)) / ny
        ds, db = ds + w * gs, db + w * gb
        ds_mag, db_mag = ds_mag + abs(w) * ms, db_mag + abs(w) * mb
    metrics.update(metrics_m)
    grads = [(dx, np.abs(dx).max()), (dy, np.abs(dy).max()), (ds, ds_mag), (db, db_mag)]
    return loss, metrics, grads


def assert_prefix_metrics(got_metrics: dict, ref_metrics: dict, dims) -> None:
    for m in dims:
        assert got_metrics[f"loss@{m}"] == pytest.approx(ref_metrics[f"loss@{m}"], rel=1e-5)
        for k in ("acc_x2y", "acc_y2x"):
            assert got_metrics[f"{k}@{m}"] == pytest.approx(ref_metrics[f"{k}@{m}"]), (k, m)


@pytest.mark.parametrize("base", ["softmax", "sigmoid", "softmax_ring", "sigmoid_ring"])
def test_matches_numpy_reference(base: str) -> None:
    x, y, s, b = make_batch("hot")  # scale 100, width 32
    dims, weights = (4, 16, 32), (1.0, 0.5, 2.0)
    options = {"dims": dims, "dim_weights": weights, "base": base}
    if base in RING_OF:
        options.update(tile_size=4, chunk_size=4)  # passed through to the ring loss
    got = run_loss("matryoshka", x, y, s, b, **options)
    want = np_matryoshka(x, y, s, b, dims, weights, base)
    assert_matches(base, got, want)
    assert_prefix_metrics(got[1], want[1], dims)


@pytest.mark.parametrize("n_dev", [1, 2, 4, 8])
def test_same_on_any_number_of_devices(n_dev: int) -> None:
    x, y, s, b = make_batch("typical", n=48)
    dims = (8, 24)  # the largest prefix need not be the whole width
    got = run_loss("matryoshka", x, y, s, b, n_dev=n_dev, dims=dims, base="sigmoid")
    want = np_matryoshka(x, y, s, b, dims, (1.0, 1.0), "sigmoid")
    assert_matches(f"{n_dev} devices", got, want)
    assert_prefix_metrics(got[1], want[1], dims)


def test_default_dims_are_mrls_doubling() -> None:
    assert mrl_dims(512) == (8, 16, 32, 64, 128, 256, 512)
    assert mrl_dims(96) == (8, 16, 32, 64, 96)
    x, y, s, b = make_batch("typical")  # width 32: prefixes 8, 16, 32
    got = run_loss("matryoshka", x, y, s, b)
    assert_matches("default", got, np_matryoshka(x, y, s, b, (8, 16, 32), (1.0,) * 3, "softmax"))


def test_options_pass_through_to_the_base_loss() -> None:
    ring = get_loss("matryoshka", {"base": "softmax_ring", "tile_size": 8, "chunk_size": 16})
    assert ring.fn.keywords == {"base": "softmax_ring", "tile_size": 8, "chunk_size": 16}
    assert ring.inputs == ()


@pytest.mark.parametrize(
    "bad, match",
    [
        ({"dims": (16, 8)}, "increase"),
        ({"dims": (8, 64)}, "width"),
        ({"dims": (0, 8)}, "positive"),
        ({"dims": (8, 16), "dim_weights": (1.0,)}, "one weight per dim"),
        ({"base": "soft_targets"}, "without inputs"),
        ({"base": "no_such_loss"}, "Unknown loss"),
    ],
)
def test_bad_options_are_refused(bad: dict, match: str) -> None:
    x = jnp.zeros((4, 32))
    with pytest.raises(ValueError, match=match):
        LOSSES.get("matryoshka")(x, x, 1.0, 0.0, axis_name="data", **bad)
