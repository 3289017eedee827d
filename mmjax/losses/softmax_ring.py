"""`softmax_ring`: exact symmetric InfoNCE in O(tile x chunk) memory per device.

The logits of local images against a travelling chunk of texts are scored once and serve
both directions: image->text statistics per local row, text->image statistics per column,
which travel home with their chunk. Per row we keep the running max and the sum of exp
over the negatives only, and the positive logit apart (taken from the same block, so
bit-identical): the loss is softplus(lse_neg - positive), which stays accurate when it is
tiny, and the accuracy is `positive > max_neg` for free. The custom VJP recomputes each
block as the chunks travel again, so no [b_local, B] array exists in either pass.
"""

import functools

import jax
import jax.numpy as jnp

from mmjax.losses.registry import LOSSES
from mmjax.losses.ring import (
    AxisName,
    Tile,
    block_size,
    pair_masks,
    put_rows,
    ring_fold,
    rows_of,
    varying,
)

Stats = tuple[jax.Array, jax.Array]  # (max over negatives, sum of exp(negative - max))


def stream_negatives(stats: Stats, neg: jax.Array, axis: int) -> Stats:
    """Streams one block of logits (-inf where not a negative) into running stats."""
    m, n = stats
    m_new = jnp.maximum(m, neg.max(axis))
    shift = jnp.where(jnp.isfinite(m_new), m_new, 0.0)  # nothing seen yet: the sum stays 0
    e = jnp.exp(neg - jnp.expand_dims(shift, axis)).sum(axis)
    return m_new, n * jnp.exp(m - shift) + e


def finish_rows(stats: Stats, pos: jax.Array):
    """Per-row loss and correctness, and what the backward pass needs: a safe max, `coef`
    with p_ij = exp(l_ij - max) * coef for the negatives, and `sig` = 1 - p_ii."""
    m, n = stats
    t = m + jnp.log(n) - pos  # log sum_neg exp(l - positive); -inf when there is no negative
    sig = jax.nn.sigmoid(t)
    coef = jnp.where(n > 0, sig / n, 0.0)
    safe_m = jnp.where(jnp.isfinite(m), m, 0.0)
    return jax.nn.softplus(t), pos > m, (safe_m, coef, sig)


def _forward(x: jax.Array, y: jax.Array, s: jax.Array, axis_name: AxisName, tile: int, chunk: int):
    """Image->text stats per local image, text->image stats per local text, positives."""
    b = x.shape[0]

    def tile_fn(t: Tile, carry, travel):
        rm, rn, pos, cm, cn = carry
        yc, tm, tn = travel
        logits = (rows_of(x, t.start, tile) * s) @ yc.astype(jnp.float32).T
        pos_mask, absent, _ = pair_masks(t)
        neg = jnp.where(absent, -jnp.inf, logits)
        mine = (jax.lax.dynamic_slice_in_dim(a, t.start, tile) for a in (rm, rn, pos))
        mm, mn, mp = mine
        mm, mn = stream_negatives((mm, mn), neg, axis=1)
        # The positive is taken from the block itself, bit-identical to what the max saw.
        mp = mp + jnp.where(pos_mask, logits, 0.0).sum(1)
        rm, rn, pos = (put_rows(a, t.start, u) for a, u in zip((rm, rn, pos), (mm, mn, mp)))
        return (rm, rn, pos, cm, cn), (yc, *stream_negatives((tm, tn), neg, axis=0))

    def depart(carry, c0):
        return tuple(jax.lax.dynamic_slice_in_dim(a, c0, chunk) for a in (y, *carry[3:]))

    def arrive(carry, c0, travel):
        return (*carry[:3], *(put_rows(c, c0, u) for c, u in zip(carry[3:], travel[1:])))

    ninf, zeros = jnp.full((b,), -jnp.inf), jnp.zeros((b,))
    carry = varying((ninf, zeros, zeros, ninf, zeros), axis_name)
    rm, rn, pos, cm, cn = ring_fold(
        tile_fn, carry, depart, arrive, local_batch=b, tile=tile, chunk=chunk, axis_name=axis_name
    )
    # Text i's positive is image i's: the same pair, on this same device.
    return finish_rows((rm, rn), pos), finish_rows((cm, cn), pos)


@functools.partial(jax.custom_vjp, nondiff_argnums=(3, 4, 5))
def _ring(x, y, s, axis_name, tile, chunk):
    return _ring_fwd(x, y, s, axis_name, tile, chunk)[0]


def _ring_fwd(x, y, s, axis_name, tile, chunk):
    s32 = s.astype(jnp.float32)
    i2t, t2i = _forward(x, y, s32, axis_name, tile, chunk)
    global_b = x.shape[0] * jax.lax.axis_size(axis_name)
    sums = jax.lax.psum(
        jnp.stack([i2t[0].sum(), t2i[0].sum(), i2t[1].sum(), t2i[1].sum()]), axis_name
    )
    out = (
        (sums[0] + sums[1]) / (2 * global_b),
        {
            "loss_x2y": sums[0] / global_b,
            "loss_y2x": sums[1] / global_b,
            "acc_x2y": sums[2] / global_b,
            "acc_y2x": sums[3] / global_b,
        },
    )
    return out, (x, y, s, i2t[2], t2i[2])


def _ring_bwd(axis_name, tile, chunk, res, ct):
    x, y, s_in, row_res, col_res = res
    s = s_in.astype(jnp.float32)
    b, d = x.shape
    weight = ct[0].astype(jnp.float32) / (2 * b * jax.lax.axis_size(axis_name))

    def tile_fn(t: Tile, carry, travel):
        dx, dy, ds = carry
        yc, cm, cc, csig, dyc = travel
        xq = rows_of(x, t.start, tile)
        yc32 = yc.astype(jnp.float32)
        logits = (xq * s) @ yc32.T
        pos_mask, absent, _ = pair_masks(t)
        neg = jnp.where(absent, -jnp.inf, logits)
        rm, rc, rsig = (jax.lax.dynamic_slice_in_dim(r, t.start, tile) for r in row_res)
        # d(loss)/d(logit): p - 1 of each direction formed apart (FIELD-NOTES: numerics).
        g = jnp.exp(neg - rm[:, None]) * rc[:, None] + jnp.exp(neg - cm[None, :]) * cc[None, :]
        g = (g - jnp.where(pos_mask, rsig[:, None] + csig[None, :], 0.0)) * weight
        gy = g @ yc32
        dx = put_rows(dx, t.start, jax.lax.dynamic_slice_in_dim(dx, t.start, tile) + s * gy)
        return (dx, dy, ds + jnp.vdot(xq, gy)), (yc, cm, cc, csig, dyc + g.T @ (xq * s))

    def depart(carry, c0):
        col = tuple(jax.lax.dynamic_slice_in_dim(c, c0, chunk) for c in (y, *col_res, carry[1]))
        return col

    def arrive(carry, c0, travel):
        return carry[0], put_rows(carry[1], c0, travel[-1]), carry[2]

    zeros = jnp.zeros((b, d), jnp.float32)
    carry = varying((zeros, zeros, jnp.zeros((), jnp.float32)), axis_name)
    dx, dy, ds = ring_fold(
        tile_fn, carry, depart, arrive, local_batch=b, tile=tile, chunk=chunk, axis_name=axis_name
    )
    return dx.astype(x.dtype), dy.astype(y.dtype), jax.lax.psum(ds, axis_name).astype(s_in.dtype)


_ring.defvjp(_ring_fwd, _ring_bwd)


@LOSSES.register("softmax_ring")
def softmax_ring_loss(
    x: jax.Array,
    y: jax.Array,
    scale: jax.Array,
    bias: jax.Array,
    *,
    axis_name: AxisName,
    tile_size: int = 1024,
    chunk_size: int = 1024,
) -> tuple[jax.Array, dict[str, jax.Array]]:
    """Symmetric InfoNCE, equal to `softmax` but never holding a [b_local, B] array.

    `tile_size`: local image rows per block of logits; `chunk_size`: text rows per
    travelling chunk. Neither need divide the local batch. `bias` does not change a
    softmax; its gradient is zero.
    """
    b = x.shape[0]
    tile = block_size("tile_size", tile_size, b)
    chunk = block_size("chunk_size", chunk_size, b)
    del bias
    return _ring(x, y, scale, axis_name, tile, chunk)
