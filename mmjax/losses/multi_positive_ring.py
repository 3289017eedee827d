"""`multi_positive_ring`: the multi-positive loss of `multi_positive`, exactly, in
O(tile x chunk) memory per device.

Each device keeps its x rows and labels; chunks of y rows travel round the ring with their
labels (`ring.ring_fold`). One [tile, chunk] block of logits serves both directions: it is
streamed into the x->y statistics of the local rows and into the y->x statistics of the
visiting columns, which travel home with their chunk (`multi_positive.stream`). The custom
VJP saves only per-row statistics and recomputes each block as the chunks travel again,
the chunk's gradient travelling with it, so no [b_local, B] array exists in either pass.
"""

import functools

import jax
import jax.numpy as jnp

from mmjax.losses import multi_positive as mp
from mmjax.losses.registry import LOSSES
from mmjax.losses.ring import AxisName, Tile, block_size, put_rows, ring_fold, rows_of, varying


def _masks(t: Tile, row_labels: jax.Array, col_labels: jax.Array):
    """(positive pairs, negative pairs) of a block; pairs an earlier tile covered are neither."""
    same = row_labels[:, None] == col_labels[None, :]
    if t.valid is None:
        return same, ~same
    return same & t.valid, ~same & t.valid


def _slice(tree, start: jax.Array, size: int):
    return jax.tree.map(lambda a: jax.lax.dynamic_slice_in_dim(a, start, size), tree)


def _put(tree, start: jax.Array, rows):
    return jax.tree.map(lambda a, u: put_rows(a, start, u), tree, rows)


def _block(x, x_labels, s, t: Tile, tile: int, travel):
    """The tile's query rows and the block of logits against the visiting chunk."""
    xq = rows_of(x, t.start, tile)
    yc, lc = travel[0]
    yc32 = yc.astype(jnp.float32)
    logits = (xq * s) @ yc32.T  # the scale in one operand, as in `softmax`
    pos, neg = _masks(t, jax.lax.dynamic_slice_in_dim(x_labels, t.start, tile), lc)
    return xq, yc32, logits, pos, neg


def _forward(x, y, x_labels, y_labels, s, axis_name, tile, chunk):
    """x->y statistics of the local x rows, y->x statistics of the local y rows."""
    bx, by = x.shape[0], y.shape[0]

    def tile_fn(t: Tile, carry, travel):
        rows, cols_home = carry
        _, _, logits, pos, neg = _block(x, x_labels, s, t, tile, travel)
        mine = mp.stream(_slice(rows, t.start, tile), logits, pos, neg, axis=1)
        cols = mp.stream(travel[1], logits, pos, neg, axis=0)
        return (_put(rows, t.start, mine), cols_home), (travel[0], cols)

    def depart(carry, c0):
        return _slice((y, y_labels), c0, chunk), _slice(carry[1], c0, chunk)

    def arrive(carry, c0, travel):
        return carry[0], _put(carry[1], c0, travel[1])

    carry = varying((mp.empty(bx), mp.empty(by)), axis_name)
    return ring_fold(
        tile_fn,
        carry,
        depart,
        arrive,
        local_batch=bx,
        local_cols=by,
        tile=tile,
        chunk=chunk,
        axis_name=axis_name,
    )


@functools.partial(jax.custom_vjp, nondiff_argnums=(5, 6, 7))
def _ring(x, y, s, x_labels, y_labels, axis_name, tile, chunk):
    return _ring_fwd(x, y, s, x_labels, y_labels, axis_name, tile, chunk)[0]


def _ring_fwd(x, y, s, x_labels, y_labels, axis_name, tile, chunk):
    row_stats, col_stats = _forward(
        x, y, x_labels, y_labels, s.astype(jnp.float32), axis_name, tile, chunk
    )
    *x2y, row_res = mp.finish(row_stats)
    *y2x, col_res = mp.finish(col_stats)
    loss, metrics, counts = mp.reduce_terms(tuple(x2y), tuple(y2x), axis_name)
    return (loss, metrics), (x, y, s, x_labels, y_labels, row_res, col_res, counts)


def _ring_bwd(axis_name, tile, chunk, res, ct):
    x, y, s_in, x_labels, y_labels, row_res, col_res, counts = res
    s = s_in.astype(jnp.float32)
    # Each direction's mean has weight 1/2 over its rows with a positive.
    wx, wy = ct[0].astype(jnp.float32) / (2 * jnp.maximum(counts, 1.0))
    row_res, col_res = mp.weighted(row_res, wx), mp.weighted(col_res, wy)
    (bx, d), by = x.shape, y.shape[0]

    def tile_fn(t: Tile, carry, travel):
        dx, dy, ds = carry
        xq, yc32, logits, pos, neg = _block(x, x_labels, s, t, tile, travel)
        # Each direction's slopes are formed apart, then added.
        g = mp.slopes(logits, pos, neg, _slice(row_res, t.start, tile), axis=1)
        g = g + mp.slopes(logits, pos, neg, travel[1], axis=0)
        gy = g @ yc32
        dx = put_rows(dx, t.start, jax.lax.dynamic_slice_in_dim(dx, t.start, tile) + s * gy)
        dyc = travel[2] + g.T @ (xq * s)
        return (dx, dy, ds + jnp.vdot(xq, gy)), (*travel[:2], dyc)

    def depart(carry, c0):
        return (
            _slice((y, y_labels), c0, chunk),
            _slice(col_res, c0, chunk),
            _slice(carry[1], c0, chunk),
        )

    def arrive(carry, c0, travel):
        return carry[0], put_rows(carry[1], c0, travel[2]), carry[2]

    carry = (jnp.zeros((bx, d), jnp.float32), jnp.zeros((by, d), jnp.float32), jnp.zeros(()))
    dx, dy, ds = ring_fold(
        tile_fn,
        varying(carry, axis_name),
        depart,
        arrive,
        local_batch=bx,
        local_cols=by,
        tile=tile,
        chunk=chunk,
        axis_name=axis_name,
    )
    ds = jax.lax.psum(ds, axis_name)
    return dx.astype(x.dtype), dy.astype(y.dtype), ds.astype(s_in.dtype), None, None


_ring.defvjp(_ring_fwd, _ring_bwd)


@LOSSES.register("multi_positive_ring")
def multi_positive_ring_loss(
    x: jax.Array,
    y: jax.Array,
    scale: jax.Array,
    bias: jax.Array,
    *,
    axis_name: AxisName,
    x_labels: jax.Array,
    y_labels: jax.Array,
    tile_size: int = 1024,
    chunk_size: int = 1024,
) -> tuple[jax.Array, dict[str, jax.Array]]:
    """`multi_positive`, never holding a [b_local, B] array.

    `tile_size`: local x rows per block of logits; `chunk_size`: y rows per travelling
    chunk. Neither need divide the local batch. `bias` does not change a softmax.
    """
    tile = block_size("tile_size", tile_size, x.shape[0])
    chunk = block_size("chunk_size", chunk_size, y.shape[0])
    del bias
    return _ring(x, y, scale, x_labels, y_labels, axis_name, tile, chunk)
