"""Linear probe: multinomial logistic regression on frozen image features.

As in the CLIP paper (Radford et al. 2021, A.3): L-BFGS logistic regression (there
scikit-learn's, here optax's, full batch in JAX with the examples sharded over the
mesh), at most 1000 iterations, the L2 strength chosen on a validation split held out
from the training split, then refit on the whole training split and scored on the test
split (top-1).

Objective (scikit-learn's with C = 1/l2): mean cross-entropy + l2 / (2 n) * ||W||^2,
bias unregularised. The sweep is CLIP's parametric search, as CLIP_benchmark codes it:
l2 on a grid of 97 values log-spaced over [1e-6, 1e6] (8 per decade); first the 7
values 1e-6, 1e-4, ..., 1e6, then spans of 8, 4, 2, 1 grid steps left and right of the
best so far; the first of equal accuracies wins (in the order [left, best, right]).
The validation split is a seeded `val_fraction` of the training split.
"""

import functools
import math
from collections.abc import Callable
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
from jax.sharding import Mesh

from mmjax.evals.batches import replicated_rows
from mmjax.evals.datasets import DATASET_DEFAULTS, build_dataset, require
from mmjax.evals.features import Features
from mmjax.evals.registry import COMMON_DEFAULTS, EVALUATORS, EvalContext, with_defaults

DEFAULTS = dict(
    **COMMON_DEFAULTS,
    **DATASET_DEFAULTS,
    train_split="train",
    features="backbone",
    modality="image",  # whose tower's features are classified
    val_fraction=0.2,
    max_iter=1000,
    tol=1e-4,  # stop when every gradient entry is below this (scikit-learn's gtol)
)
L2_GRID = np.logspace(-6, 6, 97)


@functools.partial(jax.jit, static_argnames=("num_classes", "max_iter", "tol"))
def fit_logistic_regression(
    x: jax.Array,
    y: jax.Array,
    weight: jax.Array,
    l2: jax.Array,
    num_classes: int,
    max_iter: int,
    tol: float,
) -> dict[str, jax.Array]:
    """{"w": [d, classes], "b": [classes]} minimising the objective above with L-BFGS.

    Rows of weight 0 (padding) do not count. Stops after `max_iter` iterations or when
    the largest gradient entry is at most `tol`. Jitted once for the process: evaluators
    and checkpoints with the same shapes share the compiled loop.
    """
    n = jnp.sum(weight)

    def loss(params: dict) -> jax.Array:
        logits = x @ params["w"] + params["b"]
        ce = optax.softmax_cross_entropy_with_integer_labels(logits, y)
        return jnp.sum(weight * ce) / n + 0.5 * l2 / n * jnp.sum(params["w"] ** 2)

    opt = optax.lbfgs()
    value_and_grad = optax.value_and_grad_from_state(loss)

    def step(carry):
        params, state = carry
        value, grad = value_and_grad(params, state=state)
        updates, state = opt.update(grad, state, params, value=value, grad=grad, value_fn=loss)
        return optax.apply_updates(params, updates), state

    def going(carry) -> jax.Array:
        _, state = carry
        count = optax.tree.get(state, "count")
        grad = optax.tree.get(state, "grad")
        largest = jnp.max(jnp.stack([jnp.max(jnp.abs(g)) for g in jax.tree.leaves(grad)]))
        return (count == 0) | ((count < max_iter) & (largest > tol))

    params = {
        "w": jnp.zeros((x.shape[1], num_classes), jnp.float32),
        "b": jnp.zeros((num_classes,), jnp.float32),
    }
    params, _ = jax.lax.while_loop(going, step, (params, opt.init(params)))
    return params


@jax.jit
def correct(params: dict, x: jax.Array, y: jax.Array, weight: jax.Array) -> jax.Array:
    """How many rows (weight 1) the classifier gets right; argmax ties: the lower class."""
    return jnp.sum(weight * (jnp.argmax(x @ params["w"] + params["b"], axis=-1) == y))


def parametric_search(accuracy: Callable[[int], float], grid_size: int) -> int:
    """CLIP's sweep over grid indices: every 16th, then spans 8, 4, 2, 1 around the best."""
    cache: dict[int, float] = {}

    def best_of(indices: list[int]) -> int:
        best, best_acc = indices[0], -math.inf
        for i in indices:
            if i not in cache:
                cache[i] = accuracy(i)
            if cache[i] > best_acc:
                best, best_acc = i, cache[i]
        return best

    peak = best_of(list(range(0, grid_size, 16)))
    span = 8
    while span > 0:
        peak = best_of([max(peak - span, 0), peak, min(peak + span, grid_size - 1)])
        span //= 2
    return peak


class Probe:
    """Fits and scores logistic regressions on the mesh; compiled once per data shape.

    The fit runs replicated, the same full computation on every device, so the result is
    bitwise independent of the device count. Sharding the rows would split the sums
    over examples differently on 1 and on 8 devices, and an L-BFGS run that stops at
    `max_iter` (small l2 on separable features) turns such rounding differences into
    different weights and different picks of l2. Memory per device: n x (d + classes)
    float32 and their gradients (ImageNet-1k at width 768: about 9 GB plus temporaries).
    The fits of the sweep and the final fit pad their rows to one size (weight 0), so
    the L-BFGS loop compiles once per training-set size.
    """

    def __init__(self, mesh: Mesh, num_classes: int, max_iter: int, tol: float):
        self.mesh = mesh
        self.options = dict(num_classes=num_classes, max_iter=max_iter, tol=tol)

    def rows(
        self, x: np.ndarray, y: np.ndarray, size: int = 0
    ) -> tuple[jax.Array, jax.Array, jax.Array]:
        """(features, labels, weights) on every device, padded to `size` rows of weight 0."""
        pad = max(size - len(x), 0)
        x = np.concatenate([x, np.zeros((pad, x.shape[1]), x.dtype)]).astype(np.float32)
        y = np.concatenate([y, np.zeros(pad, y.dtype)]).astype(np.int32)
        weight = (np.arange(len(x)) < len(x) - pad).astype(np.float32)
        return tuple(replicated_rows(a, self.mesh) for a in (x, y, weight))

    def fit(self, rows: tuple, l2: float) -> dict:
        return fit_logistic_regression(*rows, jnp.float32(l2), **self.options)

    def accuracy(self, params: dict, rows: tuple) -> float:
        return float(correct(params, *rows)) / float(np.sum(jax.device_get(rows[2])))

    def top1(
        self,
        train_x: np.ndarray,
        train_y: np.ndarray,
        test_x: np.ndarray,
        test_y: np.ndarray,
        seed: int,
        val_fraction: float,
    ) -> dict[str, float]:
        """{"top1", "l2"}: the sweep on a held-out split, the refit on all of train, the test."""
        perm = np.random.default_rng(seed).permutation(len(train_x))
        n_val = round(val_fraction * len(train_x))
        val, fit = np.sort(perm[:n_val]), np.sort(perm[n_val:])
        fit_rows = self.rows(train_x[fit], train_y[fit], len(train_x))
        val_rows = self.rows(train_x[val], train_y[val])
        search = lambda i: self.accuracy(self.fit(fit_rows, L2_GRID[i]), val_rows)
        l2 = float(L2_GRID[parametric_search(search, len(L2_GRID))])
        params = self.fit(self.rows(train_x, train_y), l2)
        return {"top1": self.accuracy(params, self.rows(test_x, test_y)), "l2": l2}


class LinearProbe:
    """Linear-probe top-1 of frozen image features (train split -> test split)."""

    def __init__(self, model: nn.Module, train: Any, test: Any, mesh: Mesh, c, seed: int):
        self.train, self.test, self.mesh, self.c, self.seed = train, test, mesh, c, seed
        self.features = Features(model, mesh, c.modality, c.features, c.batch_size)
        self.probe = Probe(mesh, len(test.class_names), c.max_iter, c.tol)

    def run(self, params: Any) -> dict[str, float]:
        train_x, train_y = self.features(params, self.train, "linear probe: train features")
        test_x, test_y = self.features(params, self.test, "linear probe: test features")
        return self.probe.top1(train_x, train_y, test_x, test_y, self.seed, self.c.val_fraction)


@EVALUATORS.register("linear_probe")
def linear_probe(c: ml_collections.ConfigDict, context: EvalContext) -> LinearProbe:
    """Linear probe on `c.dataset`: fit on `c.train_split`, top-1 on `c.split`."""
    c = with_defaults(c, DEFAULTS)
    train = require(build_dataset(c, context.config, c.train_split), "class_names", c)
    test = require(build_dataset(c, context.config), "class_names", c)
    return LinearProbe(context.model, train, test, context.mesh, c, context.config.seed)
