"""Linear probe against scikit-learn's LogisticRegression; kNN against a numpy reference."""

import numpy as np
import pytest

from mmjax.evals.knn import KNNScorer
from mmjax.evals.linear_probe import L2_GRID, Probe, parametric_search
from mmjax.parallel.mesh import make_mesh
from tests.helpers import tiny_config

sklearn_linear = pytest.importorskip("sklearn.linear_model", reason="needs scikit-learn")


def blobs(seed: int, n: int, d: int = 16, classes: int = 6, spread: float = 1.6):
    """Overlapping Gaussian classes: neither separable nor hopeless."""
    rng = np.random.default_rng(seed)
    centres = np.random.default_rng(99).normal(size=(classes, d))
    y = rng.integers(classes, size=n)
    return (centres[y] + spread * rng.normal(size=(n, d))).astype(np.float32), y.astype(np.int32)


def sklearn_top1(train_x, train_y, test_x, test_y, l2: float) -> float:
    """scikit-learn's L-BFGS logistic regression, C = 1 / l2 (CLIP's protocol)."""
    model = sklearn_linear.LogisticRegression(C=1 / l2, max_iter=1000, tol=1e-4)
    model.fit(train_x.astype(np.float64), train_y)
    return float(np.mean(model.predict(test_x.astype(np.float64)) == test_y))


@pytest.fixture(scope="module")
def mesh():
    return make_mesh(tiny_config().mesh)


@pytest.fixture(scope="module")
def probe(mesh):
    """One probe for the module: its L-BFGS loop compiles once for 500 training rows."""
    return Probe(mesh, 6, max_iter=1000, tol=1e-4)


@pytest.mark.parametrize("l2", [1e-3, 1.0, 100.0])
def test_fit_matches_sklearn_at_fixed_strength(probe, l2):
    (train_x, train_y), (test_x, test_y) = blobs(0, 500), blobs(1, 400)
    ours = probe.accuracy(probe.fit(probe.rows(train_x, train_y), l2), probe.rows(test_x, test_y))
    want = sklearn_top1(train_x, train_y, test_x, test_y, l2)
    assert abs(ours - want) <= 0.01, (ours, want)
    assert 0.4 < want < 0.95


def test_probe_with_sweep_is_within_a_point_of_sklearn(probe):
    (train_x, train_y), (test_x, test_y) = blobs(2, 500), blobs(3, 1001)
    seed, val_fraction = 7, 0.2
    got = probe.top1(train_x, train_y, test_x, test_y, seed, val_fraction)

    # Reference: the same protocol written out with scikit-learn.
    perm = np.random.default_rng(seed).permutation(len(train_x))
    val, fit = np.sort(perm[:100]), np.sort(perm[100:])
    accuracy = {}

    def val_acc(i):
        if i not in accuracy:
            accuracy[i] = sklearn_top1(
                train_x[fit], train_y[fit], train_x[val], train_y[val], L2_GRID[i]
            )
        return accuracy[i]

    peak = max(range(0, 97, 16), key=lambda i: (val_acc(i), -i))
    for span in (8, 4, 2, 1):
        peak = max([max(peak - span, 0), peak, min(peak + span, 96)], key=lambda i: val_acc(i))
    want = sklearn_top1(train_x, train_y, test_x, test_y, L2_GRID[peak])
    assert abs(got["top1"] - want) <= 0.01, (got, want, L2_GRID[peak])


def test_parametric_search_finds_the_peak_with_few_fits():
    calls = []
    curve = lambda i: calls.append(i) or -abs(i - 37)
    assert parametric_search(curve, 97) == 37
    assert len(set(calls)) <= 15 and len(calls) == len(set(calls))  # fits are cached
    assert parametric_search(lambda i: 1.0, 97) == 0  # equal accuracies: the first wins


def knn_reference(bank, bank_y, test, test_y, classes, k=20, t=0.07):
    """DINO's eval_knn weighted vote, in float64 numpy."""
    norm = lambda a: a / np.linalg.norm(a, axis=1, keepdims=True)
    sims = norm(test.astype(np.float64)) @ norm(bank.astype(np.float64)).T
    top1 = top5 = 0
    for i in range(len(test)):
        nearest = np.argsort(-sims[i], kind="stable")[:k]
        votes = np.zeros(classes)
        np.add.at(votes, bank_y[nearest], np.exp(sims[i, nearest] / t))
        ranked = np.argsort(-votes, kind="stable")
        top1 += ranked[0] == test_y[i]
        top5 += test_y[i] in ranked[:5]
    return top1 / len(test), top5 / len(test)


def test_knn_equals_numpy_reference(mesh):
    (bank, bank_y), (test, test_y) = blobs(4, 300, classes=7), blobs(5, 1001, classes=7)
    got = KNNScorer(mesh, 7, k=20, temperature=0.07, batch_size=64)(bank, bank_y, test, test_y)
    top1, top5 = knn_reference(bank, bank_y, test, test_y, 7)
    assert got == {"top1": top1, "top5": top5}
    assert 0.3 < top1 < top5 < 1
