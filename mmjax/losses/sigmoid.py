"""`sigmoid`: the SigLIP pairwise sigmoid loss (Zhai et al. 2023), all-gather form.

Every (image, text) pair of the global batch is a binary problem, positive on the
diagonal: loss = -1/B sum_ij log sigmoid(z_ij (scale <x_i, y_j> + bias)), z_ii = 1 and
z_ij = -1 otherwise, normalised by the global batch size B as in the paper. No normaliser
couples the pairs, so each device scores its own images against the gathered texts
([b_local, B] logits) and the sums are added up.
"""

import jax
import jax.numpy as jnp

from mmjax.losses.contrastive import AxisName, gather, local_offset
from mmjax.losses.registry import LOSSES


def pair_terms(logits: jax.Array, positive: jax.Array) -> jax.Array:
    """-log sigmoid(z * logit) = softplus(-z * logit), accurate for tiny and huge logits."""
    return jax.nn.softplus(jnp.where(positive, -logits, logits))


@LOSSES.register("sigmoid")
def sigmoid_loss(
    x: jax.Array,
    y: jax.Array,
    scale: jax.Array,
    bias: jax.Array,
    *,
    axis_name: AxisName,
) -> tuple[jax.Array, dict[str, jax.Array]]:
    """SigLIP loss over the global batch; accuracies are those of the argmax retrieval."""
    x = x.astype(jnp.float32)
    b = x.shape[0]
    offset = local_offset(b, axis_name)
    global_b = b * jax.lax.axis_size(axis_name)
    ys = gather(y.astype(jnp.float32), axis_name)
    # The scale goes into one operand before the matmul (see FIELD-NOTES: numerics).
    logits = (x * scale.astype(jnp.float32)) @ ys.T + bias.astype(jnp.float32)
    positive = jnp.arange(b)[:, None] + offset == jnp.arange(global_b)[None, :]
    loss_sum = pair_terms(logits, positive).sum()

    # Accuracy: the positive beats every negative of its row (its column for text->image).
    # A column spans devices: reduce its max across them, then read this device's texts.
    logits = jax.lax.stop_gradient(logits)
    neg = jnp.where(positive, -jnp.inf, logits)
    pos = jnp.where(positive, logits, 0.0).sum(axis=1)
    col_max = jax.lax.pmax(neg.max(axis=0), axis_name)
    own_col_max = jax.lax.dynamic_slice_in_dim(col_max, offset, b)
    sums = jax.lax.psum(
        jnp.stack([loss_sum, (pos > neg.max(axis=1)).sum(), (pos > own_col_max).sum()]),
        axis_name,
    )
    metrics = {"acc_x2y": sums[1] / global_b, "acc_y2x": sums[2] / global_b}
    return sums[0] / global_b, metrics
