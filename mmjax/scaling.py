"""Power-law fits for scaling studies: error = beta x C^alpha, with bootstrap intervals.

A power law is a line in log-log space, log(error) = log(beta) + alpha x log(C), so the
fit is least squares on the logs (as in Cherti et al. 2023, who fit E = beta x C^alpha
per model family). Confidence intervals come from a bootstrap over points: resample the
(C, error) pairs with replacement, refit, take percentiles. With a handful of points the
intervals are wide, which is the honest answer.
"""

import dataclasses

import numpy as np


@dataclasses.dataclass(frozen=True)
class PowerLaw:
    """error = beta x x^alpha, with bootstrap percentile intervals (lo, hi) for each."""

    alpha: float
    beta: float
    alpha_ci: tuple[float, float]
    beta_ci: tuple[float, float]
    n: int

    def __call__(self, x: np.ndarray) -> np.ndarray:
        return self.beta * np.asarray(x, float) ** self.alpha


def fit_loglog(x: np.ndarray, y: np.ndarray) -> tuple[float, float]:
    """(alpha, beta) of y = beta x x^alpha by least squares on log y against log x."""
    x, y = np.asarray(x, float), np.asarray(y, float)
    if np.any(x <= 0) or np.any(y <= 0):
        raise ValueError("A power law needs positive x and y (an error of 0 has no log).")
    alpha, log_beta = np.polyfit(np.log(x), np.log(y), 1)
    return float(alpha), float(np.exp(log_beta))


def fit_power_law(
    x: np.ndarray, y: np.ndarray, num_bootstrap: int = 1000, level: float = 0.95, seed: int = 0
) -> PowerLaw:
    """The fit and its bootstrap intervals; resamples with fewer than 2 distinct x are redrawn."""
    x, y = np.asarray(x, float), np.asarray(y, float)
    if len(np.unique(x)) < 2:
        raise ValueError(f"A power law needs at least 2 distinct x values, got {len(x)} points.")
    alpha, beta = fit_loglog(x, y)
    rng = np.random.default_rng(seed)
    samples = []
    while len(samples) < num_bootstrap:
        idx = rng.integers(0, len(x), len(x))
        if len(np.unique(x[idx])) >= 2:
            samples.append(fit_loglog(x[idx], y[idx]))
    alphas, betas = np.array(samples).T
    q = [100 * (1 - level) / 2, 100 * (1 + level) / 2]
    return PowerLaw(
        alpha=alpha,
        beta=beta,
        alpha_ci=tuple(float(v) for v in np.percentile(alphas, q)),
        beta_ci=tuple(float(v) for v in np.percentile(betas, q)),
        n=len(x),
    )
