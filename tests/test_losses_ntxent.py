"""`ntxent`, `ntxent_ring` against a float64 NumPy NT-Xent written from SimCLR (Chen et al.
2020, eq. 1): Z = [X; Y] (2B rows), L = s Z Z^T; row i's positive is p(i) = i +- B, its
denominator every k != i; loss = mean_i -log softmax_{k != i}(L_ik)_{p(i)}.
dloss/dL = G with G_ik = (P_ik - [k = p(i)]) / 2B off the diagonal (P the row softmax
over k != i), 0 on it; dZ = s (G + G^T) Z, ds = <G, Z Z^T>.
"""

import numpy as np
import pytest

from tests.test_losses import _logsumexp, make_batch, run_loss


def np_ntxent(x, y, s, b=0.0):
    x, y = x.astype(np.float64), y.astype(np.float64)
    n = len(x)
    z = np.concatenate([x, y])
    dots = z @ z.T
    logits = s * dots
    eye = np.eye(2 * n, dtype=bool)
    partner = np.concatenate([np.arange(n, 2 * n), np.arange(n)])
    masked = np.where(eye, -np.inf, logits)
    lse = _logsumexp(masked, 1)
    per_row = lse - logits[np.arange(2 * n), partner]
    p = np.where(eye, 0.0, np.exp(masked - lse[:, None]))
    onehot = np.zeros_like(p)
    onehot[np.arange(2 * n), partner] = 1.0
    g = (p - onehot) / (2 * n)
    dz = s * (g + g.T) @ z
    ds = (g * dots).sum()
    correct = masked.argmax(1) == partner
    metrics = {"acc_x2y": correct[:n].mean(), "acc_y2x": correct[n:].mean()}
    grads = [
        (dz[:n], float(np.abs(dz).max())),
        (dz[n:], float(np.abs(dz).max())),
        (ds, float(np.abs(g * dots).sum())),
        (0.0, 0.0),
    ]
    return float(per_row.mean()), metrics, grads


def _check(got, want, rtol=1e-5):
    loss, metrics, grads = got
    assert loss == pytest.approx(want[0], rel=rtol)
    for k in ("acc_x2y", "acc_y2x"):
        assert metrics[k] == pytest.approx(want[1][k])
    for g, (r, mag) in zip(grads, want[2]):
        np.testing.assert_allclose(g, r, rtol=rtol, atol=rtol * max(mag, 1e-12))


@pytest.mark.parametrize("case", ["typical", "hot", "separable"])
@pytest.mark.parametrize("name", ["ntxent", "ntxent_ring"])
def test_ntxent_matches_numpy_reference_on_8_devices(name, case):
    x, y, s, _ = make_batch(case, n=48)
    options = {"tile_size": 4, "chunk_size": 5} if name == "ntxent_ring" else {}
    _check(run_loss(name, x, y, s, 0.0, **options), np_ntxent(x, y, s))


@pytest.mark.parametrize("name", ["ntxent", "ntxent_ring"])
def test_ntxent_one_device_equals_eight(name):
    x, y, s, _ = make_batch("hot", n=32)
    options = {"tile_size": 8, "chunk_size": 3} if name == "ntxent_ring" else {}
    one = run_loss(name, x, y, s, 0.0, n_dev=1, **options)
    _check(
        run_loss(name, x, y, s, 0.0, **options),
        (one[0], one[1], [(g, np.abs(g).max()) for g in one[2]]),
    )
