"""Power-law fits: recovery of a known law, and the plot tool end to end."""

import csv
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from mmjax import scaling

REPO = Path(__file__).resolve().parents[1]


def test_fit_loglog_matches_closed_form_slope():
    # Independent reference: slope = cov(log x, log y) / var(log x) by hand.
    rng = np.random.default_rng(1)
    x = np.geomspace(1e15, 1e19, 9)
    y = 3.0 * x**-0.1 * np.exp(rng.normal(0, 0.05, x.size))
    lx, ly = np.log(x), np.log(y)
    slope = np.sum((lx - lx.mean()) * (ly - ly.mean())) / np.sum((lx - lx.mean()) ** 2)
    intercept = ly.mean() - slope * lx.mean()
    alpha, beta = scaling.fit_loglog(x, y)
    np.testing.assert_allclose(alpha, slope, rtol=1e-9)
    np.testing.assert_allclose(beta, np.exp(intercept), rtol=1e-9)


def test_noise_free_power_law_is_exact():
    x = np.array([1e3, 1e4, 1e5, 1e6])
    fit = scaling.fit_power_law(x, 0.5 * x**-0.3, num_bootstrap=50)
    np.testing.assert_allclose([fit.alpha, fit.beta], [-0.3, 0.5], rtol=1e-9)
    np.testing.assert_allclose(fit.alpha_ci, [-0.3, -0.3], rtol=1e-9)


def _noisy_law_csv(path: Path, alpha: float, beta: float, seed: int) -> None:
    """A results.csv whose zero-shot error follows beta x C^alpha with 3% log-normal noise."""
    rng = np.random.default_rng(seed)
    compute = np.repeat(np.geomspace(1e16, 1e20, 12), 2)
    error = beta * compute**alpha * np.exp(rng.normal(0, 0.03, compute.size))
    with open(path, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=["loss", "model", "compute_flops", "zeroshot_top1"])
        w.writeheader()
        for c, e in zip(compute, error):
            w.writerow(dict(loss="sigmoid", model="mu/8", compute_flops=c, zeroshot_top1=1 - e))


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_fit_recovers_known_law_within_its_intervals(tmp_path, seed):
    alpha, beta = -0.08, 9.0
    path = tmp_path / "results.csv"
    _noisy_law_csv(path, alpha, beta, seed)
    with open(path, newline="") as f:
        rows = list(csv.DictReader(f))
    x = np.array([float(r["compute_flops"]) for r in rows])
    err = 1 - np.array([float(r["zeroshot_top1"]) for r in rows])
    fit = scaling.fit_power_law(x, err, num_bootstrap=500, seed=seed)
    assert fit.alpha_ci[0] <= alpha <= fit.alpha_ci[1]
    assert fit.beta_ci[0] <= beta <= fit.beta_ci[1]
    assert fit.alpha_ci[1] - fit.alpha_ci[0] < 0.02  # informative, not just wide
    assert fit.n == 24


def test_fit_refuses_a_single_x_and_zero_error():
    with pytest.raises(ValueError, match="2 distinct"):
        scaling.fit_power_law([1.0, 1.0], [0.5, 0.4])
    with pytest.raises(ValueError, match="positive"):
        scaling.fit_loglog([1.0, 2.0], [0.5, 0.0])


def test_plot_tool_writes_png_and_table(tmp_path):
    path = tmp_path / "results.csv"
    _noisy_law_csv(path, -0.08, 9.0, seed=0)
    out = tmp_path / "plots" / "law"
    subprocess.run(
        [
            sys.executable,
            str(REPO / "tools/plot_scaling.py"),
            f"--csv={path}",
            f"--out={out}",
            "--bootstrap=100",
        ],
        check=True,
        capture_output=True,
    )
    assert out.with_suffix(".png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    table = out.with_suffix(".md").read_text()
    assert "| loss=sigmoid, model=mu/8 | 24 | -0.08" in table
