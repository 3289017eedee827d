"""Losses between two modalities, selected by name (registry.py).

Every loss has one signature and runs inside the shard_map island over the batch axes:

    loss_fn(x, y, scale, bias, *, axis_name, <inputs>, <options>) -> (loss, metrics)

`x`, `y`: this device's L2-normalised embeddings [b_local, d] of the two modalities (any
float dtype); `scale`, `bias`: scalars; `axis_name`: the mesh axes the batch is split
over; keyword-only parameters without a default are extra per-example inputs (labels,
token features), those with one are options. The loss is the mean over the global batch,
float32, and identical on every device; metrics likewise, named `loss_x2y`, `acc_y2x`, ...
"""

from mmjax.losses import (
    contrastive,  # noqa: F401  (registers losses)
    filip,  # noqa: F401
    matryoshka,  # noqa: F401
    multi_positive,  # noqa: F401
    multi_positive_ring,  # noqa: F401
    ntxent,  # noqa: F401
    per_example,  # noqa: F401
    queue,  # noqa: F401
    sigmoid,  # noqa: F401
    sigmoid_ring,  # noqa: F401
    soft_matrix,  # noqa: F401
    soft_targets,  # noqa: F401
    softmax_ring,  # noqa: F401
)
from mmjax.losses.objectives import Objective, term_config
from mmjax.losses.registry import LOSSES, Loss, get_loss, sharded_loss

__all__ = ["LOSSES", "Loss", "Objective", "get_loss", "sharded_loss", "term_config"]
