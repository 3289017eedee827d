"""All-gather contrastive losses: each device scores its own rows against the gathered
other modality (the "local loss" form of open_clip), so logits are b_local x B.
"""

from collections.abc import Sequence

import jax
import jax.numpy as jnp

from mmjax.losses.registry import LOSSES

AxisName = str | Sequence[str]


def gather(x: jax.Array, axis_name: AxisName) -> jax.Array:
    """All devices' rows, in mesh order: [b_local, d] -> [B, d]."""
    return jax.lax.all_gather(x, axis_name, tiled=True)


def local_offset(b_local: int, axis_name: AxisName) -> jax.Array:
    """Index in the global batch of this device's first row."""
    return jax.lax.axis_index(axis_name) * b_local


def _row_terms(
    queries: jax.Array, keys: jax.Array, scale: jax.Array, offset: jax.Array
) -> tuple[jax.Array, jax.Array]:
    """Per-row InfoNCE loss and correctness for queries against all keys.

    The loss is softplus(lse_negatives - positive), not lse_all - positive: the latter
    subtracts two logits of ~scale that agree to the loss, so at scale 100 a loss below
    ~1e-6 drowns in their rounding, and autodiff's p_ii - 1 rounds to 0. In this form the
    positive's gradient is -sigmoid(lse_negatives - positive), exact however small.
    """
    # The scale goes into one operand before the matmul: with `s * (x @ y.T)` XLA fused
    # the multiply into the exp and the logsumexp came out below the positive logit.
    logits = (queries * scale) @ keys.T
    target = offset + jnp.arange(queries.shape[0])
    is_positive = target[:, None] == jnp.arange(keys.shape[0])[None, :]
    positive = jnp.take_along_axis(logits, target[:, None], axis=1)[:, 0]
    negatives = jax.nn.logsumexp(jnp.where(is_positive, -jnp.inf, logits), axis=-1)
    loss = jax.nn.softplus(negatives - positive)
    correct = jnp.argmax(logits, axis=-1) == target
    return loss, correct


@LOSSES.register("softmax")
def softmax_loss(
    x: jax.Array,
    y: jax.Array,
    scale: jax.Array,
    bias: jax.Array,
    *,
    axis_name: AxisName,
) -> tuple[jax.Array, dict[str, jax.Array]]:
    """Symmetric InfoNCE (CLIP): mean of the x->y and y->x cross-entropies.

    `bias` is accepted for a uniform API; a per-row constant does not change a softmax.
    """
    del bias
    x = x.astype(jnp.float32)
    y = y.astype(jnp.float32)
    scale = scale.astype(jnp.float32)
    b = x.shape[0]
    offset = local_offset(b, axis_name)
    global_b = b * jax.lax.axis_size(axis_name)
    i2t_loss, i2t_ok = _row_terms(x, gather(y, axis_name), scale, offset)
    t2i_loss, t2i_ok = _row_terms(y, gather(x, axis_name), scale, offset)
    sums = jax.lax.psum(
        jnp.stack([i2t_loss.sum(), t2i_loss.sum(), i2t_ok.sum(), t2i_ok.sum()]), axis_name
    )
    loss = (sums[0] + sums[1]) / (2 * global_b)
    metrics = {
        "loss_x2y": sums[0] / global_b,
        "loss_y2x": sums[1] / global_b,
        "acc_x2y": sums[2] / global_b,
        "acc_y2x": sums[3] / global_b,
    }
    return loss, metrics
