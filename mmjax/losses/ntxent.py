"""`ntxent` and `ntxent_ring`: SimCLR's NT-Xent between two augmented views of each example.

x and y are two views of the same B examples (two modalities of the batch that share one
tower). The 2B rows z = the views together are each other's queries and keys: row i's
positive is the other view of its example, its negatives are every other row of either
view, 2B - 2 of them (Chen et al. 2020, eq. 1), and the loss is the mean over the 2B rows:

    loss = 1/2B sum_i -log( exp(s <z_i, z_p(i)>) / sum_{k != i} exp(s <z_i, z_k>) )

with s the term's learned scale (SimCLR's 1/tau: set `temperature_init=log(1/tau)` and
freeze it with `optim.freeze` for a fixed temperature). Global row order: device by
device, each device's x rows then its y rows, so the partner of a row is on its device.

`ntxent` gathers every device's rows (logits [2b_local, 2B]); `ntxent_ring` never holds
more than a [tile, chunk] block of logits: the rows travel round the ring (ring.py) as the
keys, and as the logits are symmetric each row only needs its own statistics, so nothing
but the chunk (and its gradient, backward) travels. Both compute the loss as
softplus(lse_negatives - positive), which stays exact when it is tiny (contrastive.py).
"""

import functools

import jax
import jax.numpy as jnp

from mmjax.losses.contrastive import AxisName, gather
from mmjax.losses.registry import LOSSES
from mmjax.losses.ring import Tile, block_size, put_rows, ring_fold, rows_of, varying
from mmjax.losses.softmax_ring import finish_rows, stream_negatives


def _views(x: jax.Array, y: jax.Array) -> jax.Array:
    """This device's 2b rows: its x rows, then its y rows, float32."""
    if x.shape != y.shape:
        raise ValueError(f"NT-Xent needs two views of one shape, got {x.shape} and {y.shape}.")
    return jnp.concatenate([x, y]).astype(jnp.float32)


def _masks(rows: jax.Array, cols: jax.Array, b: int) -> tuple[jax.Array, jax.Array]:
    """(positive pairs, pairs that are no negative: the positive and the row itself), for
    global row and column indices in the device-major [x; y] order with b rows per view."""
    partner = rows + jnp.where(rows % (2 * b) < b, b, -b)
    pos = partner[:, None] == cols[None, :]
    return pos, pos | (rows[:, None] == cols[None, :])


def _metrics(losses: jax.Array, correct: jax.Array, b: int, axis_name: AxisName):
    """Loss and metrics from the per-row loss and correctness of this device's 2b rows."""
    sums = jax.lax.psum(
        jnp.stack([losses[:b].sum(), losses[b:].sum(), correct[:b].sum(), correct[b:].sum()]),
        axis_name,
    )
    n = b * jax.lax.axis_size(axis_name)
    metrics = {
        "loss_x2y": sums[0] / n,
        "loss_y2x": sums[1] / n,
        "acc_x2y": sums[2] / n,
        "acc_y2x": sums[3] / n,
    }
    return (sums[0] + sums[1]) / (2 * n), metrics


@LOSSES.register("ntxent")
def ntxent_loss(
    x: jax.Array, y: jax.Array, scale: jax.Array, bias: jax.Array, *, axis_name: AxisName
) -> tuple[jax.Array, dict[str, jax.Array]]:
    """NT-Xent over the gathered 2B rows (module docstring); `bias` does not change it."""
    del bias
    b = x.shape[0]
    z = _views(x, y)
    logits = (z * scale.astype(jnp.float32)) @ gather(z, axis_name).T
    me = jax.lax.axis_index(axis_name)
    rows = me * 2 * b + jnp.arange(2 * b)
    pos, absent = _masks(rows, jnp.arange(logits.shape[1]), b)
    positive = jnp.where(pos, logits, 0.0).sum(1)
    neg = jnp.where(absent, -jnp.inf, logits)
    loss = jax.nn.softplus(jax.nn.logsumexp(neg, axis=1) - positive)
    return _metrics(loss, positive > neg.max(1), b, axis_name)


def _block(z: jax.Array, t: Tile, zc: jax.Array, s: jax.Array, tile: int, b: int):
    """(query rows, logits, positives, non-negatives) of one [tile, chunk] block."""
    zq = rows_of(z, t.start, tile)
    logits = (zq * s) @ zc.T
    pos, absent = _masks(t.rows, t.cols, b)
    if t.valid is not None:
        pos, absent = pos & t.valid, absent | ~t.valid
    return zq, logits, pos, absent


def _ring_forward(z, s, b, axis_name, tile, chunk):
    n = z.shape[0]

    def tile_fn(t: Tile, carry, travel):
        (zc,) = travel
        _, logits, pos, absent = _block(z, t, zc, s, tile, b)
        mine = [jax.lax.dynamic_slice_in_dim(a, t.start, tile) for a in carry]
        mm, mn = stream_negatives((mine[0], mine[1]), jnp.where(absent, -jnp.inf, logits), axis=1)
        mp = mine[2] + jnp.where(pos, logits, 0.0).sum(1)
        carry = tuple(put_rows(a, t.start, u) for a, u in zip(carry, (mm, mn, mp)))
        return carry, travel

    depart = lambda carry, c0: (jax.lax.dynamic_slice_in_dim(z, c0, chunk),)
    arrive = lambda carry, c0, travel: carry
    ninf, zeros = jnp.full((n,), -jnp.inf), jnp.zeros((n,))
    m, total, pos = ring_fold(
        tile_fn,
        varying((ninf, zeros, zeros), axis_name),
        depart,
        arrive,
        local_batch=n,
        tile=tile,
        chunk=chunk,
        axis_name=axis_name,
    )
    return finish_rows((m, total), pos)


@functools.partial(jax.custom_vjp, nondiff_argnums=(3, 4, 5))
def _ring(x, y, s, axis_name, tile, chunk):
    return _ring_fwd(x, y, s, axis_name, tile, chunk)[0]


def _ring_fwd(x, y, s, axis_name, tile, chunk):
    b = x.shape[0]
    z = _views(x, y)
    losses, correct, res = _ring_forward(z, s.astype(jnp.float32), b, axis_name, tile, chunk)
    return _metrics(losses, correct, b, axis_name), (x, y, s, res)


def _ring_bwd(axis_name, tile, chunk, res, ct):
    """Row i's loss depends on l_ik = s <z_i, z_k> for every k: with G_ik its gradient
    (p_ik on negatives, -(1 - p_ii+) on the positive), dz_i += s G_ik z_k here and
    dz_k += s G_ik z_i travels home with chunk k."""
    x, y, s_in, (m, coef, sig) = res
    s = s_in.astype(jnp.float32)
    b = x.shape[0]
    z = _views(x, y)
    weight = ct[0].astype(jnp.float32) / (2 * b * jax.lax.axis_size(axis_name))

    def tile_fn(t: Tile, carry, travel):
        dz, dz_home, ds = carry
        zc, dzc = travel
        zq, logits, pos, absent = _block(z, t, zc, s, tile, b)
        rm, rc, rsig = (jax.lax.dynamic_slice_in_dim(r, t.start, tile) for r in (m, coef, sig))
        g = jnp.where(absent, 0.0, jnp.exp(logits - rm[:, None]) * rc[:, None])
        g = (g - jnp.where(pos, rsig[:, None], 0.0)) * weight
        gz = g @ zc
        dz = put_rows(dz, t.start, jax.lax.dynamic_slice_in_dim(dz, t.start, tile) + s * gz)
        return (dz, dz_home, ds + jnp.vdot(zq, gz)), (zc, dzc + g.T @ (zq * s))

    # As in softmax_ring: a chunk's gradient as keys travels with it and is stored home.
    def depart(carry, c0):
        return tuple(jax.lax.dynamic_slice_in_dim(a, c0, chunk) for a in (z, carry[1]))

    def arrive(carry, c0, travel):
        return carry[0], put_rows(carry[1], c0, travel[1]), carry[2]

    zeros = jnp.zeros(z.shape, jnp.float32)
    carry = varying((zeros, zeros, jnp.zeros((), jnp.float32)), axis_name)
    dz, dz_home, ds = ring_fold(
        tile_fn,
        carry,
        depart,
        arrive,
        local_batch=2 * b,
        tile=tile,
        chunk=chunk,
        axis_name=axis_name,
    )
    dz, ds = dz + dz_home, jax.lax.psum(ds, axis_name)
    return dz[:b].astype(x.dtype), dz[b:].astype(y.dtype), ds.astype(s_in.dtype)


_ring.defvjp(_ring_fwd, _ring_bwd)


@LOSSES.register("ntxent_ring")
def ntxent_ring_loss(
    x: jax.Array,
    y: jax.Array,
    scale: jax.Array,
    bias: jax.Array,
    *,
    axis_name: AxisName,
    tile_size: int = 1024,
    chunk_size: int = 1024,
) -> tuple[jax.Array, dict[str, jax.Array]]:
    """`ntxent` in O(tile x chunk) memory: `tile_size` local rows per block of logits,
    `chunk_size` rows per travelling chunk (of the 2b_local rows; need not divide them)."""
    del bias
    n = 2 * x.shape[0]
    tile = block_size("tile_size", tile_size, n)
    chunk = block_size("chunk_size", chunk_size, n)
    return _ring(x, y, scale, axis_name, tile, chunk)
