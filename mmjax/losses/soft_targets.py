"""`soft_targets` and `soft_targets_masked`: InfoNCE against soft targets built from a teacher.

InfoNCE calls every other example a negative, even another photo of the same dog. These
losses soften the one-hot target with a distribution q_i that a stop-gradient teacher
(`x_teacher`, `y_teacher`: this step's embeddings stop-gradiented, or an EMA model's) puts
on similar examples. Over the global batch of B pairs, with logits l_ij = s <x_i, y_j>:

    t_i = (1 - alpha) e_i + alpha q_i,    q_ij = w_ij / sum_k w_ik
    loss_x2y = -1/B sum_i sum_j t_ij log softmax_j(l_ij)

and loss_y2x likewise over the columns (rows y_j, logits l_ij over i), with the weights built
the same way from y's side; loss = (loss_x2y + loss_y2x) / 2. The weights w, by `target`
(u is the teacher of the `intra_modality`, a row's own modality for "cross"; T =
`target_temperature`):

- "cross": w_ij = exp(<xt_i, yt_j> / T), so q_i = softmax_j(<xt_i, yt_j> / T); y->x uses
  exp(<yt_j, xt_i> / T) (the teacher's column softmax).
- "intra" (CWCL, Srinivasa et al. 2023): w_ij = (1 + <ut_i, ut_j>) / 2, the cosine
  similarity within one modality mapped to [0, 1], normalised by its row sum; CWCL takes
  u to be the modality with the pre-trained (frozen) encoder, for both directions, and
  alpha = 1 (it has no one-hot term). T is not used.
- "maskcon" (MaskCon, Feng & Patras 2023, as in their reference code): w_ii = 1 and, for
  j != i, w_ij = exp((<ut_i, ut_j> - max_{k != i} <ut_i, ut_k>) / T): a softmax over the
  other examples rescaled so that the nearest one weighs as much as the example itself.

`soft_targets_masked` (MaskCon's coarse labels, inputs `x_labels`, `y_labels` [b] int)
multiplies w_ij by [x_label_i == y_label_j] (y->x: [y_label_j == x_label_i]), so q only
puts mass on examples of the row's coarse class; "maskcon" masks the neighbours and the
max over them, and keeps w_ii = 1. A row whose weights are all zero (no allowed column;
for "maskcon", no neighbour of its class) gets q_i = e_i. With every label equal the mask
changes nothing; with every label distinct (and a pair's two labels equal) only w_ii is
left, q_i = e_i, and the loss is plain InfoNCE.

All-gather form: each device builds its rows' targets against the gathered teacher
embeddings (and labels), so q is exact over the global batch; logits and targets are
[b_local, B]. The teacher and the labels receive no gradient (stop_gradient here).
"""

from collections.abc import Callable

import jax
import jax.numpy as jnp

from mmjax.losses.contrastive import AxisName, gather, local_offset
from mmjax.losses.registry import LOSSES

# (teacher similarity [b, B], allowed columns [b, B] or None, diagonal [b, B], T) -> weights
Weights = Callable[[jax.Array, jax.Array | None, jax.Array, float], jax.Array]


def _allowed(mask: jax.Array | None, like: jax.Array) -> jax.Array:
    return jnp.ones(like.shape, bool) if mask is None else mask


def _softmax_weights(sim, allowed, diag, temperature):
    """exp(sim / T) on the allowed columns, shifted by their max (q is shift-invariant)."""
    del diag
    allowed = _allowed(allowed, sim)
    top = jnp.where(allowed, sim, -jnp.inf).max(axis=1, keepdims=True)
    top = jnp.where(jnp.isfinite(top), top, 0.0)
    return jnp.where(allowed, jnp.exp((sim - top) / temperature), 0.0)


def _cwcl_weights(sim, allowed, diag, temperature):
    """CWCL: (1 + cos) / 2, in [0, 1] for unit vectors; no temperature."""
    del diag, temperature
    return jnp.where(_allowed(allowed, sim), (1.0 + sim) / 2.0, 0.0)


def _maskcon_weights(sim, allowed, diag, temperature):
    """MaskCon: weight 1 on the example itself; neighbours exp((sim - max_neighbour) / T)."""
    neighbours = _allowed(allowed, sim) & ~diag
    top = jnp.where(neighbours, sim, -jnp.inf).max(axis=1, keepdims=True)
    top = jnp.where(jnp.isfinite(top), top, 0.0)
    return jnp.where(diag, 1.0, jnp.where(neighbours, jnp.exp((sim - top) / temperature), 0.0))


# target name -> (similarity source, weights). "cross": a row's own teacher against the other
# modality's; "intra": the teacher of `intra_modality` against itself.
TARGETS: dict[str, tuple[str, Weights]] = {
    "cross": ("cross", _softmax_weights),
    "intra": ("intra", _cwcl_weights),
    "maskcon": ("intra", _maskcon_weights),
}


def _direction(queries, keys, scale, sim, allowed, diag, alpha, temperature, weights: Weights):
    """Per-row soft-target cross-entropy and top-1 correctness of queries against all keys;
    `diag` marks each row's own pair."""
    logits = (queries * scale) @ keys.T  # scale in one operand before the matmul, as `softmax`
    w = weights(sim, allowed, diag, temperature)
    total = w.sum(axis=1, keepdims=True)
    q = jnp.where(total > 0, w / jnp.where(total > 0, total, 1.0), diag.astype(w.dtype))
    target = (1.0 - alpha) * diag + alpha * q
    # -sum_j t_ij log p_ij = sum_{j != i} t_ij (l_ii - l_ij) + softplus(lse_{j != i} l_ij -
    # l_ii), as sum_j t_ij = 1: no difference of two ~scale-sized logsumexps, and the
    # diagonal's gradient comes from the softplus alone (-sigmoid, not 1 - 1 - sigmoid), so
    # a tiny loss (a one-hot target on a separable batch) keeps its relative precision.
    positive = jnp.where(diag, logits, 0.0).sum(axis=1, keepdims=True)
    negatives = jax.nn.logsumexp(jnp.where(diag, -jnp.inf, logits), axis=1)
    spread = jnp.where(diag, 0.0, target * (positive - logits)).sum(axis=1)
    loss = spread + jax.nn.softplus(negatives - positive[:, 0])
    correct = jnp.take_along_axis(diag, jnp.argmax(logits, axis=1)[:, None], axis=1)[:, 0]
    return loss, correct


def _check(target: str, alpha: float, temperature: float, intra_modality: str) -> None:
    if target not in TARGETS:
        raise ValueError(f"target must be one of {sorted(TARGETS)}, got {target!r}.")
    if not 0.0 <= alpha <= 1.0:
        raise ValueError(f"alpha must be in [0, 1], got {alpha!r}.")
    if not temperature > 0:
        raise ValueError(f"target_temperature must be positive, got {temperature!r}.")
    if intra_modality not in ("x", "y"):
        raise ValueError(f"intra_modality must be 'x' or 'y', got {intra_modality!r}.")


def _soft_target_loss(
    x, y, scale, x_teacher, y_teacher, x_labels, y_labels, *, axis_name, options
) -> tuple[jax.Array, dict[str, jax.Array]]:
    target, alpha, temperature, intra_modality = options
    _check(target, alpha, temperature, intra_modality)
    source, weights = TARGETS[target]
    x, y = x.astype(jnp.float32), y.astype(jnp.float32)
    scale = scale.astype(jnp.float32)
    xt, yt = (jax.lax.stop_gradient(t).astype(jnp.float32) for t in (x_teacher, y_teacher))
    b = x.shape[0]
    offset = local_offset(b, axis_name)
    global_b = b * jax.lax.axis_size(axis_name)
    diag = jnp.arange(b)[:, None] + offset == jnp.arange(global_b)[None, :]
    xt_all, yt_all = gather(xt, axis_name), gather(yt, axis_name)
    u, u_all = (xt, xt_all) if intra_modality == "x" else (yt, yt_all)

    def direction(queries, keys, own_teacher, other_teacher_all, own_labels, other_labels):
        # "cross": this direction's own teacher against the other modality's.
        sim = own_teacher @ other_teacher_all.T if source == "cross" else u @ u_all.T
        allowed = None
        if own_labels is not None:
            allowed = own_labels[:, None] == gather(other_labels, axis_name)[None, :]
        return _direction(
            queries, gather(keys, axis_name), scale, sim, allowed, diag, alpha, temperature, weights
        )

    x2y, x2y_ok = direction(x, y, xt, yt_all, x_labels, y_labels)
    y2x, y2x_ok = direction(y, x, yt, xt_all, y_labels, x_labels)
    sums = jax.lax.psum(jnp.stack([x2y.sum(), y2x.sum(), x2y_ok.sum(), y2x_ok.sum()]), axis_name)
    metrics = {
        "loss_x2y": sums[0] / global_b,
        "loss_y2x": sums[1] / global_b,
        "acc_x2y": sums[2] / global_b,
        "acc_y2x": sums[3] / global_b,
    }
    return (sums[0] + sums[1]) / (2 * global_b), metrics


@LOSSES.register("soft_targets")
def soft_targets_loss(
    x: jax.Array,
    y: jax.Array,
    scale: jax.Array,
    bias: jax.Array,
    *,
    axis_name: AxisName,
    x_teacher: jax.Array,
    y_teacher: jax.Array,
    target: str = "cross",
    alpha: float = 0.5,
    target_temperature: float = 0.1,
    intra_modality: str = "x",
) -> tuple[jax.Array, dict[str, jax.Array]]:
    """InfoNCE against (1 - alpha) one-hot + alpha teacher targets (module docstring).

    `x_teacher`, `y_teacher`: [b, d] L2-normalised teacher embeddings (no gradient).
    `target`: "cross", "intra" (CWCL) or "maskcon"; `target_temperature`: T of "cross" and
    "maskcon"; `intra_modality`: whose teacher defines "intra" and "maskcon" weights.
    `bias` is accepted for a uniform API and does not change a softmax.
    """
    del bias
    options = (target, alpha, target_temperature, intra_modality)
    return _soft_target_loss(
        x, y, scale, x_teacher, y_teacher, None, None, axis_name=axis_name, options=options
    )


@LOSSES.register("soft_targets_masked")
def soft_targets_masked_loss(
    x: jax.Array,
    y: jax.Array,
    scale: jax.Array,
    bias: jax.Array,
    *,
    axis_name: AxisName,
    x_teacher: jax.Array,
    y_teacher: jax.Array,
    x_labels: jax.Array,
    y_labels: jax.Array,
    target: str = "maskcon",
    alpha: float = 0.5,
    target_temperature: float = 0.1,
    intra_modality: str = "x",
) -> tuple[jax.Array, dict[str, jax.Array]]:
    """`soft_targets` with teacher mass only on columns of the row's coarse label (MaskCon).

    `x_labels`, `y_labels`: [b] integer coarse labels (no gradient). Options as in
    `soft_targets`; the default target is MaskCon's.
    """
    del bias
    options = (target, alpha, target_temperature, intra_modality)
    return _soft_target_loss(
        x, y, scale, x_teacher, y_teacher, x_labels, y_labels, axis_name=axis_name, options=options
    )
