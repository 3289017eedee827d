"""`multi_positive`: cross-modal SupCon (Khosla et al. 2020, eq. 2, "L_out") over the global
batch, all-gather form; and the blockwise statistics it shares with `multi_positive_ring`.

Rows x_i carry labels a_i, rows y_j labels c_j (a class, a coarse label, or a group id such
as "the same image" for its K captions). The positives of x_i are P(i) = {j : c_j = a_i},
and with logits l_ij = s <x_i, y_j>

    loss_x2y_i = -1/|P(i)| sum_{p in P(i)} log softmax_j(l_ij)[p] = lse_j l_ij - mean_P l_ip,

symmetrically for y -> x. The loss is the mean of the two directions' means over rows. A
row with no positive has no defined loss: it is left out of its direction's mean and
accuracy, and counted in `no_positive_x2y` / `no_positive_y2x`. Accuracy: the top-1 column
of a row is one of its positives (`max_positive > max_negative`; a tie counts as wrong).

Numerics. With lse_P, lse_N the logsumexps over the positives and the negatives and
t = lse_N - lse_P, the row loss is computed as

    loss_i = (lse_P - mean_P l) + softplus(t),   lse_P - mean_P l = log n_P + gap / |P|,

where n_P = sum_P exp(l - max_P) and gap = sum_P (max_P - l) >= 0. No term cancels: for a
single positive it is exactly softplus(lse_N - l_ii), InfoNCE's accurate form, and a
1e-16 loss keeps its relative precision.

Gradient (per direction, w = 1 / (2 * rows with a positive)): dL/dl_ij = w (p_ij - [j in
P(i)] / |P(i)|). With sigma = sigmoid(t), the negatives' share of the row's softmax, and
q_j = exp(l_ij - lse_P) the softmax within the positives:

    negative j:  p_ij = exp(l_ij - max_N) * sigma / n_N
    positive j:  p_ij - 1/|P| = (q_j - 1/|P|) - q_j * sigma

The positive's form never rounds 1 - sigma: with one positive q_j = 1 exactly and the
slope is -sigma, however small. Both forms compute it blockwise from saved per-row
statistics (`Residual`), the all-gather one in a custom VJP over its logits, the ring one
over recomputed blocks.
"""

from typing import NamedTuple

import jax
import jax.numpy as jnp

from mmjax.losses.contrastive import AxisName, gather
from mmjax.losses.registry import LOSSES


class Stats(NamedTuple):
    """Running statistics of one direction's rows, streamed over blocks of logits."""

    neg_max: jax.Array  # max over the negatives seen (-inf: none yet)
    neg_sum: jax.Array  # sum of exp(negative - neg_max)
    pos_max: jax.Array
    pos_sum: jax.Array  # sum of exp(positive - pos_max)
    pos_gap: jax.Array  # sum of (pos_max - positive), >= 0
    pos_count: jax.Array  # number of positives (float32: exact below 2^24)


class Residual(NamedTuple):
    """Per-row values from which `slopes` rebuilds a block of d(row loss)/d(logit)."""

    neg_max: jax.Array  # finite
    neg_coef: jax.Array  # sigma / n_N (0 without negatives)
    pos_max: jax.Array  # finite
    pos_inv: jax.Array  # 1 / n_P (0 without positives)
    inv_count: jax.Array  # 1 / |P| (0 without positives)
    sigma: jax.Array  # sigmoid(lse_N - lse_P)


def empty(n: int) -> Stats:
    ninf, zeros = jnp.full((n,), -jnp.inf), jnp.zeros((n,))
    return Stats(ninf, zeros, ninf, zeros, zeros, zeros)


def _finite(m: jax.Array) -> jax.Array:
    return jnp.where(jnp.isfinite(m), m, 0.0)


def stream(stats: Stats, logits: jax.Array, pos: jax.Array, neg: jax.Array, axis: int) -> Stats:
    """Adds one block of logits to the statistics of the rows along `axis` (1: the block's
    rows are the queries; 0: its columns are). `pos`, `neg`: which pairs are positives and
    negatives; pairs in neither are skipped."""
    inf = jnp.float32(jnp.inf)
    m_neg = jnp.maximum(stats.neg_max, jnp.where(neg, logits, -inf).max(axis))
    m_pos = jnp.maximum(stats.pos_max, jnp.where(pos, logits, -inf).max(axis))
    sh_neg, sh_pos = (jnp.expand_dims(_finite(m), axis) for m in (m_neg, m_pos))
    e = jnp.exp(logits - jnp.where(pos, sh_pos, sh_neg))  # one exp serves both sums
    old = stats.pos_count > 0
    return Stats(
        m_neg,
        stats.neg_sum * jnp.exp(stats.neg_max - _finite(m_neg)) + jnp.where(neg, e, 0.0).sum(axis),
        m_pos,
        stats.pos_sum * jnp.exp(stats.pos_max - _finite(m_pos)) + jnp.where(pos, e, 0.0).sum(axis),
        stats.pos_gap
        + jnp.where(old, stats.pos_count * (m_pos - jnp.where(old, stats.pos_max, 0.0)), 0.0)
        + jnp.where(pos, sh_pos - logits, 0.0).sum(axis),
        stats.pos_count + pos.sum(axis, dtype=jnp.float32),
    )


def finish(stats: Stats) -> tuple[jax.Array, jax.Array, jax.Array, Residual]:
    """Per-row (loss, correct, has a positive, residual); loss and correct are 0 / False
    for rows without a positive."""
    valid = stats.pos_count > 0
    has_neg = stats.neg_sum > 0
    log_pos = jnp.log(jnp.where(valid, stats.pos_sum, 1.0))
    log_neg = jnp.log(jnp.where(has_neg, stats.neg_sum, 1.0))
    t = jnp.where(valid & has_neg, (stats.neg_max + log_neg) - (stats.pos_max + log_pos), -jnp.inf)
    inv_count = jnp.where(valid, 1.0 / jnp.where(valid, stats.pos_count, 1.0), 0.0)
    loss = jnp.where(valid, log_pos + stats.pos_gap * inv_count + jax.nn.softplus(t), 0.0)
    correct = valid & (stats.pos_max > stats.neg_max)
    sigma = jax.nn.sigmoid(t)
    residual = Residual(
        _finite(stats.neg_max),
        jnp.where(has_neg, sigma / jnp.where(has_neg, stats.neg_sum, 1.0), 0.0),
        _finite(stats.pos_max),
        jnp.where(valid, 1.0 / jnp.where(valid, stats.pos_sum, 1.0), 0.0),
        inv_count,
        sigma,
    )
    return loss, correct, valid, residual


def weighted(residual: Residual, w: jax.Array) -> Residual:
    """The residual of `w * loss` (the slopes are linear in neg_coef, pos_inv, inv_count)."""
    return residual._replace(
        neg_coef=residual.neg_coef * w,
        pos_inv=residual.pos_inv * w,
        inv_count=residual.inv_count * w,
    )


def slopes(logits: jax.Array, pos: jax.Array, neg: jax.Array, r: Residual, axis: int) -> jax.Array:
    """d(row loss)/d(logit) over a block, for the rows along `axis` (see the module doc)."""
    r = Residual(*(jnp.expand_dims(a, axis) for a in r))
    e = jnp.exp(logits - jnp.where(pos, r.pos_max, r.neg_max))
    q = e * r.pos_inv
    return jnp.where(pos, (q - r.inv_count) - q * r.sigma, jnp.where(neg, e * r.neg_coef, 0.0))


@jax.custom_vjp
def _row_losses(logits: jax.Array, pos: jax.Array) -> tuple[jax.Array, jax.Array, jax.Array]:
    """(loss, correct, has a positive) of each row of `logits` against all its columns."""
    return finish(stream(empty(logits.shape[0]), logits, pos, ~pos, axis=1))[:3]


def _row_losses_fwd(logits, pos):
    *out, residual = finish(stream(empty(logits.shape[0]), logits, pos, ~pos, axis=1))
    return tuple(out), (logits, pos, residual)


def _row_losses_bwd(res, ct):
    logits, pos, residual = res
    return slopes(logits, pos, ~pos, weighted(residual, ct[0]), axis=1), None


_row_losses.defvjp(_row_losses_fwd, _row_losses_bwd)

Terms = tuple[jax.Array, jax.Array, jax.Array]  # per local row: loss, correct, has a positive


def reduce_terms(
    x2y: Terms, y2x: Terms, axis_name: AxisName
) -> tuple[jax.Array, dict[str, jax.Array], jax.Array]:
    """Loss, metrics, and the global (x, y) rows with a positive, from per-row terms."""
    local = [t.sum(dtype=jnp.float32) for terms in (x2y, y2x) for t in terms]
    lx, cx, vx, ly, cy, vy = jax.lax.psum(jnp.stack(local), axis_name)
    n_dev = jax.lax.axis_size(axis_name)

    def mean(total, count):  # 0 when no row has a positive (then neither direction has)
        return total / jnp.maximum(count, 1.0)

    metrics = {
        "loss_x2y": mean(lx, vx),
        "loss_y2x": mean(ly, vy),
        "acc_x2y": mean(cx, vx),
        "acc_y2x": mean(cy, vy),
        "no_positive_x2y": x2y[0].shape[0] * n_dev - vx,
        "no_positive_y2x": y2x[0].shape[0] * n_dev - vy,
    }
    return (metrics["loss_x2y"] + metrics["loss_y2x"]) / 2, metrics, jnp.stack([vx, vy])


@LOSSES.register("multi_positive")
def multi_positive_loss(
    x: jax.Array,
    y: jax.Array,
    scale: jax.Array,
    bias: jax.Array,
    *,
    axis_name: AxisName,
    x_labels: jax.Array,
    y_labels: jax.Array,
) -> tuple[jax.Array, dict[str, jax.Array]]:
    """Symmetric multi-positive InfoNCE from labels; `softmax` when all labels differ.

    `x_labels` [bx], `y_labels` [by]: int labels of this device's rows (bx and by may
    differ). Each device scores its own rows against the gathered other modality
    ([b_local, B] logits, like `softmax`). `bias` does not change a softmax.
    """
    del bias
    x, y, s = (a.astype(jnp.float32) for a in (x, y, scale))
    xs, ys = gather(x, axis_name), gather(y, axis_name)
    xl, yl = gather(x_labels, axis_name), gather(y_labels, axis_name)
    # The scale goes into one operand before the matmul (as in `softmax`).
    x2y = _row_losses((x * s) @ ys.T, x_labels[:, None] == yl[None, :])
    y2x = _row_losses((y * s) @ xs.T, y_labels[:, None] == xl[None, :])
    loss, metrics, _ = reduce_terms(x2y, y2x, axis_name)
    return loss, metrics
