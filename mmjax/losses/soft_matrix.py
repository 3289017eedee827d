"""`soft_matrix`: InfoNCE against an explicit soft target matrix (PatchMix's proportions).

Over the global batch, with logits l_ij = s <x_i, y_j> and targets T [B, B] whose rows
sum to 1 (T_ij: how much of x_i is example j; data/patchmix.py), both directions use T:

    loss_x2y = -1/B sum_i sum_j T_ij log softmax_j(l_ij)
    loss_y2x = -1/B sum_j sum_i T_ij log softmax_i(l_ij)
    loss = (loss_x2y + loss_y2x) / 2

y2x is T's columns left unnormalised: y_j's target over the x rows weighs as much as j
is present in them (column mass m_j; sum_j m_j = B), so an example that no mix took
gives no y->x term instead of a division by zero. With T = I both are plain CLIP.
Computed as lse - <t, l> (the targets' mass per row known), float32. The input
`x_targets` ([b, B]: this device's rows of T) comes from the batch entry
`patchmix_targets/<x>`; it gets no gradient. accuracy: the argmax of a row's logits is
the argmax of its targets (its largest part).
"""

import jax
import jax.numpy as jnp

from mmjax.losses.contrastive import AxisName, gather, local_offset
from mmjax.losses.registry import LOSSES


@LOSSES.register("soft_matrix")
def soft_matrix_loss(
    x: jax.Array,
    y: jax.Array,
    scale: jax.Array,
    bias: jax.Array,
    *,
    axis_name: AxisName,
    x_targets: jax.Array,
) -> tuple[jax.Array, dict[str, jax.Array]]:
    """Soft-target InfoNCE both ways (module docstring). `bias` does not change a softmax."""
    del bias
    x, y, scale = x.astype(jnp.float32), y.astype(jnp.float32), scale.astype(jnp.float32)
    b = x.shape[0]
    global_b = b * jax.lax.axis_size(axis_name)
    t = jax.lax.stop_gradient(x_targets).astype(jnp.float32)  # [b, B]
    if t.shape != (b, global_b):
        raise ValueError(f"x_targets must be [{b}, {global_b}] per device, got {t.shape}.")
    offset = local_offset(b, axis_name)
    # x2y: this device's x rows against every y.
    logits = (x * scale) @ gather(y, axis_name).T  # [b, B]
    x2y = jax.nn.logsumexp(logits, axis=1) * t.sum(1) - (t * logits).sum(1)
    x2y_ok = jnp.argmax(logits, 1) == jnp.argmax(t, 1)
    # y2x: this device's y columns of T against every x.
    cols = jax.lax.dynamic_slice_in_dim(gather(t, axis_name), offset, b, axis=1).T  # [b, B]
    logits_t = (y * scale) @ gather(x, axis_name).T  # [b, B]: y_j against every x_i
    y2x = jax.nn.logsumexp(logits_t, axis=1) * cols.sum(1) - (cols * logits_t).sum(1)
    has = cols.sum(1) > 0
    y2x_ok = has & (jnp.argmax(logits_t, 1) == jnp.argmax(cols, 1))
    sums = jnp.stack([x2y.sum(), y2x.sum(), x2y_ok.sum(), y2x_ok.sum(), has.sum()])
    sums = jax.lax.psum(sums, axis_name)
    metrics = {
        "loss_x2y": sums[0] / global_b,
        "loss_y2x": sums[1] / global_b,
        "acc_x2y": sums[2] / global_b,
        "acc_y2x": sums[3] / jnp.maximum(sums[4], 1),
    }
    return (sums[0] + sums[1]) / (2 * global_b), metrics
