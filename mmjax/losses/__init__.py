"""Contrastive losses, selected by `config.loss.name`.

Every loss has one signature and runs inside the shard_map island over the batch axes:

    loss_fn(image, text, scale, bias, *, axis_name, **options) -> (loss, metrics)

`image`, `text`: this device's L2-normalised embeddings [b_local, d] (any float dtype);
`scale`, `bias`: scalars; `axis_name`: the mesh axes the batch is split over. The loss is
the mean over the global batch, float32, and identical on every device; metrics likewise.
"""

from mmjax.losses import (
    contrastive,  # noqa: F401  (registers losses)
    sigmoid,  # noqa: F401
    sigmoid_ring,  # noqa: F401
    softmax_ring,  # noqa: F401
)
from mmjax.losses.registry import LOSSES, get_loss, sharded_loss

__all__ = ["LOSSES", "get_loss", "sharded_loss"]
