"""`matryoshka`: a base loss summed over nested prefixes of the embeddings (Kusupati et al.
2022, Matryoshka Representation Learning).

MRL trains one embedding whose first m coordinates are themselves a good embedding, for
every m in a nested list, by summing a loss over the prefixes. Here, for a contrastive
base loss L (`base`: "softmax", "sigmoid", "softmax_ring", "sigmoid_ring", ...):

    loss = sum_m w_m L(x[:, :m] / |x[:, :m]|, y[:, :m] / |y[:, :m]|, scale, bias)

over `dims` m_1 < m_2 < ... <= d, with `dim_weights` w_m (default all 1, MRL's uniform
"relative importance"; the terms are summed, not averaged, as in MRL). Each prefix is
L2-normalised again, since a contrastive loss compares cosine similarities. One scale (and
bias) is shared by every prefix, as MRL shares one temperature: per-prefix temperatures
would need one learnable scale per prefix, which the two-scalar signature does not carry.
The base loss's options (`tile_size`, `chunk_size` of the ring forms) pass through; memory
is that of the base loss, once per prefix (the renormalised prefixes are [b_local, m] each).

Metrics: for every prefix m, the base loss `loss@m` and the base metrics with `@m` added
(`acc_x2y@64`, ...); the unsuffixed base metrics (`acc_x2y`, ...) are those of the largest
prefix, so progress lines read the same as with the base loss alone.
"""

import itertools
from collections.abc import Sequence

import jax
import jax.numpy as jnp

from mmjax.losses.contrastive import AxisName
from mmjax.losses.registry import LOSSES, get_loss
from mmjax.normalize import l2_normalize


def mrl_dims(width: int) -> tuple[int, ...]:
    """MRL's default nesting: 8, 16, 32, ... below `width`, then `width` itself."""
    dims, m = [], 8
    while m < width:
        dims.append(m)
        m *= 2
    return (*dims, width)


def _check(dims: tuple[int, ...], weights: tuple[float, ...], width: int) -> None:
    if not dims or any(not isinstance(m, int) or m < 1 for m in dims):
        raise ValueError(f"dims must be positive ints, got {dims!r}.")
    if any(a >= b for a, b in itertools.pairwise(dims)) or dims[-1] > width:
        raise ValueError(f"dims must increase and be <= the width {width}, got {dims!r}.")
    if len(weights) != len(dims):
        raise ValueError(f"dim_weights {weights!r} must have one weight per dim {dims!r}.")


@LOSSES.register("matryoshka")
def matryoshka_loss(
    x: jax.Array,
    y: jax.Array,
    scale: jax.Array,
    bias: jax.Array,
    *,
    axis_name: AxisName,
    dims: Sequence[int] | None = None,
    dim_weights: Sequence[float] | None = None,
    base: str = "softmax",
    tile_size: int | None = None,
    chunk_size: int | None = None,
) -> tuple[jax.Array, dict[str, jax.Array]]:
    """Sum over nested prefixes `dims` (default `mrl_dims(d)`) of the loss `base`.

    `dim_weights`: one weight per prefix (default 1 each). `tile_size`, `chunk_size`: passed
    to `base` if it takes them (None: its defaults). `base` must take no extra inputs.
    """
    width = x.shape[-1]
    dims = mrl_dims(width) if dims is None else tuple(dims)
    weights = (1.0,) * len(dims) if dim_weights is None else tuple(dim_weights)
    _check(dims, weights, width)
    passed = {"tile_size": tile_size, "chunk_size": chunk_size}
    inner = get_loss(base, {k: v for k, v in passed.items() if v is not None})
    if inner.inputs:
        raise ValueError(
            f"matryoshka needs a base loss without inputs; {base!r} takes {inner.inputs}."
        )
    total = jnp.zeros((), jnp.float32)
    metrics: dict[str, jax.Array] = {}
    for m, w in zip(dims, weights):
        loss, base_metrics = inner.fn(
            l2_normalize(x[:, :m]), l2_normalize(y[:, :m]), scale, bias, axis_name=axis_name
        )
        total = total + w * loss
        metrics[f"loss@{m}"] = loss
        metrics.update({f"{k}@{m}": v for k, v in base_metrics.items()})
    metrics.update(base_metrics)  # the largest prefix's, unsuffixed
    return total, metrics
