"""`mean`: the global-batch mean of a per-example value, such as a self-supervised head's
loss (models/heads.py: MAE, MLM), as an objective term.

    config.objectives.mae = mmconfig.objective("mean", ("mae", "mae"))

The term's "modality" is the head's name; the model's output `{"values": [B]}` arrives as
`x_values`. x, y, scale and bias are not used (they are the values again, and the term's
unused logit parameters).
"""

import jax
import jax.numpy as jnp

from mmjax.losses.contrastive import AxisName
from mmjax.losses.registry import LOSSES


@LOSSES.register("mean")
def mean_loss(
    x: jax.Array,
    y: jax.Array,
    scale: jax.Array,
    bias: jax.Array,
    *,
    axis_name: AxisName,
    x_values: jax.Array,
) -> tuple[jax.Array, dict[str, jax.Array]]:
    """1/B sum_i values_i over the global batch (this device's b rows of it)."""
    del x, y, scale, bias
    v = x_values.astype(jnp.float32)
    total = jax.lax.psum(v.sum(), axis_name)
    return total / (v.shape[0] * jax.lax.axis_size(axis_name)), {}
