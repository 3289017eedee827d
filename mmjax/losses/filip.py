"""`filip`: FILIP's token-wise late-interaction contrastive loss (Yao et al. 2021), tiled.

Each example is a set of token features instead of one embedding: x_i has tokens x_ik
(k < Nx, those with `x_token_mask`), y_j has tokens y_jr. FILIP matches every token to
its best counterpart in the other example and averages over the valid tokens:

    s_ij  = 1/|x_i| sum_{k valid in x_i} max_{r valid in y_j} <x_ik, y_jr>   (x -> y)
    s'_ij = 1/|y_j| sum_{r valid in y_j} max_{k valid in x_i} <x_ik, y_jr>   (y -> x)

and InfoNCE over the global batch in each direction: loss_x2y = mean_i CE(softmax_j(scale
s_ij), i), loss_y2x = mean_j CE(softmax_i(scale s'_ij), j), loss = their mean. Tokens are
L2-normalised here, each on its own (`normalize_tokens`, default True, as FILIP does), so
the caller may pass raw projected token features; padding tokens never count, whatever
their values. An example with no valid token has similarity 0 to everything.

Memory: token scores exist only for one block of `tile_size` local x examples against
`chunk_size` examples of the gathered y at a time, [tile, Nx, chunk, Ny]; no [b_local, B,
...] array is built, in either pass. Each device scores its x rows against the gathered y
tokens once, and that one block pass serves both directions: x->y statistics per local
row, y->x statistics per column, reduced over devices (pmax, psum) at the end. Per row and
per column we stream the running max and sum of exp over the negatives and keep the
positive apart (the loss is softplus(lse_negatives - positive), exact when tiny). A custom
VJP saves only those statistics and recomputes each block in the backward pass; the
gathered y tokens' gradient is summed back to their devices with `psum_scatter`. Per-device
memory: the gathered y tokens and their gradient, [B, Ny, d] each (linear in B), plus a few
[tile, Nx, chunk, Ny] buffers.

The pooled embeddings x, y are not used (their gradient is zero); they stay in the
signature so that the loss has the registry's one signature.
"""

import functools

import jax
import jax.numpy as jnp

from mmjax.losses.contrastive import AxisName, gather
from mmjax.losses.registry import LOSSES
from mmjax.losses.ring import block_size, put_rows, ragged_start, varying
from mmjax.losses.softmax_ring import finish_rows, stream_negatives
from mmjax.normalize import l2_normalize


def token_similarities(xq, mxq, yc, myc) -> tuple[jax.Array, jax.Array]:
    """FILIP's (s, s') [t, c] of x tokens [t, Nx, d] against y tokens [c, Ny, d]."""
    t, nx, d = xq.shape
    c, ny, _ = yc.shape
    dots = (xq.reshape(t * nx, d) @ yc.reshape(c * ny, d).T).reshape(t, nx, c, ny)
    x_count, y_count = mxq.sum(1), myc.sum(1)
    # The best y token for each x token, then the mean over the valid x tokens; and back.
    best_r = jnp.where(myc[None, None], dots, -jnp.inf).max(axis=3)  # [t, Nx, c]
    best_r = jnp.where(mxq[:, :, None] & (y_count > 0)[None, None, :], best_r, 0.0)
    s = best_r.sum(axis=1) / jnp.maximum(x_count, 1)[:, None]
    best_k = jnp.where(mxq[:, :, None, None], dots, -jnp.inf).max(axis=1)  # [t, c, Ny]
    best_k = jnp.where(myc[None] & (x_count > 0)[:, None, None], best_k, 0.0)
    s_rev = best_k.sum(axis=2) / jnp.maximum(y_count, 1)[None, :]
    return s, s_rev


class _Block:
    """One (local tile, gathered chunk) block: its tokens and where it lies."""

    def __init__(self, xt, mx, yg, myg, q, c, tile, chunk, offset):
        b, n_cols = xt.shape[0], yg.shape[0]
        self.q0, row_new = ragged_start(q, tile, b)
        self.c0, col_new = ragged_start(c, chunk, n_cols)
        self.x = jax.lax.dynamic_slice_in_dim(xt, self.q0, tile)
        self.mx = jax.lax.dynamic_slice_in_dim(mx, self.q0, tile)
        self.y = jax.lax.dynamic_slice_in_dim(yg, self.c0, chunk)
        self.my = jax.lax.dynamic_slice_in_dim(myg, self.c0, chunk)
        rows = offset + self.q0 + jnp.arange(tile)
        diag = rows[:, None] == (self.c0 + jnp.arange(chunk))[None, :]
        valid = jnp.ones((tile, chunk), bool)
        if row_new is not None:
            valid &= row_new[:, None]
        if col_new is not None:
            valid &= col_new[None, :]
        self.pos = diag & valid  # the positive pairs this block counts
        self.absent = diag | ~valid  # pairs that are not negatives here

    def rows(self, a, size):
        return jax.lax.dynamic_slice_in_dim(a, self.q0, size)

    def cols(self, a, size):
        return jax.lax.dynamic_slice_in_dim(a, self.c0, size)


def _fold(body, carry, *, b: int, n_cols: int, tile: int, chunk: int):
    """`body(q, c, carry)` over every (local tile q, gathered chunk c)."""

    def chunk_body(c, carry):
        return jax.lax.fori_loop(0, -(-b // tile), lambda q, cr: body(q, c, cr), carry)

    return jax.lax.fori_loop(0, -(-n_cols // chunk), chunk_body, carry)


def _forward(xt, yt, mx, my, s, axis_name, tile, chunk):
    b = xt.shape[0]
    offset = jax.lax.axis_index(axis_name) * b
    yg, myg = gather(yt, axis_name), gather(my, axis_name)
    n_cols = yg.shape[0]

    def body(q, c, carry):
        rm, rn, rpos, cm, cn, cpos = carry
        blk = _Block(xt, mx, yg, myg, q, c, tile, chunk, offset)
        sim, sim_rev = (s * a for a in token_similarities(blk.x, blk.mx, blk.y, blk.my))
        row = stream_negatives(
            (blk.rows(rm, tile), blk.rows(rn, tile)), jnp.where(blk.absent, -jnp.inf, sim), 1
        )
        col = stream_negatives(
            (blk.cols(cm, chunk), blk.cols(cn, chunk)), jnp.where(blk.absent, -jnp.inf, sim_rev), 0
        )
        # Positives from the block itself, bit-identical to what the statistics saw.
        new_rpos = blk.rows(rpos, tile) + jnp.where(blk.pos, sim, 0.0).sum(1)
        new_cpos = blk.rows(cpos, tile) + jnp.where(blk.pos, sim_rev, 0.0).sum(1)
        rm, rn, rpos, cpos = (
            put_rows(a, blk.q0, u) for a, u in zip((rm, rn, rpos, cpos), (*row, new_rpos, new_cpos))
        )
        cm, cn = (put_rows(a, blk.c0, u) for a, u in zip((cm, cn), col))
        return rm, rn, rpos, cm, cn, cpos

    ninf, zeros = jnp.full((b,), -jnp.inf), jnp.zeros((b,))
    carry = varying(
        (ninf, zeros, zeros, jnp.full((n_cols,), -jnp.inf), jnp.zeros((n_cols,)), zeros), axis_name
    )
    rm, rn, rpos, cm, cn, cpos = _fold(body, carry, b=b, n_cols=n_cols, tile=tile, chunk=chunk)
    # Column j's negatives are spread over every device's rows: merge the partial stats.
    top = jax.lax.pmax(cm, axis_name)
    shift = jnp.where(jnp.isfinite(top), top, 0.0)
    cn = jax.lax.psum(cn * jnp.exp(cm - shift), axis_name)
    # The positive of column j is the pair (x_j, y_j), scored on the device that holds both.
    return finish_rows((rm, rn), rpos), finish_rows((top, cn), gather(cpos, axis_name))


@functools.partial(jax.custom_vjp, nondiff_argnums=(5, 6, 7))
def _filip(xt, yt, mx, my, s, axis_name, tile, chunk):
    return _filip_fwd(xt, yt, mx, my, s, axis_name, tile, chunk)[0]


def _filip_fwd(xt, yt, mx, my, s, axis_name, tile, chunk):
    rows, cols = _forward(xt, yt, mx, my, s.astype(jnp.float32), axis_name, tile, chunk)
    b = xt.shape[0]
    global_b = b * jax.lax.axis_size(axis_name)
    # Every device holds every column's result: each sums its own columns' share.
    own = [jax.lax.dynamic_slice_in_dim(c, jax.lax.axis_index(axis_name) * b, b) for c in cols[:2]]
    sums = jax.lax.psum(
        jnp.stack([rows[0].sum(), own[0].sum(), rows[1].sum(), own[1].sum()]), axis_name
    )
    metrics = {
        "loss_x2y": sums[0] / global_b,
        "loss_y2x": sums[1] / global_b,
        "acc_x2y": sums[2] / global_b,
        "acc_y2x": sums[3] / global_b,
    }
    return ((sums[0] + sums[1]) / (2 * global_b), metrics), (xt, yt, mx, my, s, rows[2], cols[2])


def _filip_bwd(axis_name, tile, chunk, res, ct):
    xt, yt, mx, my, s_in, row_res, col_res = res
    s = s_in.astype(jnp.float32)
    b = xt.shape[0]
    offset = jax.lax.axis_index(axis_name) * b
    yg, myg = gather(yt, axis_name), gather(my, axis_name)
    n_cols = yg.shape[0]
    weight = ct[0].astype(jnp.float32) / (2 * n_cols)

    def body(q, c, carry):
        dx, dyg, ds = carry
        blk = _Block(xt, mx, yg, myg, q, c, tile, chunk, offset)
        (sim, sim_rev), pull = jax.vjp(
            lambda xq, yc: token_similarities(xq, blk.mx, yc, blk.my), blk.x, blk.y
        )
        # d(loss)/d(logit): p - 1 on positives, p on negatives, each direction apart.
        rm, rc, rsig = (blk.rows(r, tile)[:, None] for r in row_res)
        cm, cc, csig = (blk.cols(r, chunk)[None, :] for r in col_res)
        g = jnp.exp(jnp.where(blk.absent, -jnp.inf, s * sim) - rm) * rc
        g = (g - jnp.where(blk.pos, rsig, 0.0)) * weight
        g_rev = jnp.exp(jnp.where(blk.absent, -jnp.inf, s * sim_rev) - cm) * cc
        g_rev = (g_rev - jnp.where(blk.pos, csig, 0.0)) * weight
        ds = ds + jnp.vdot(g, sim) + jnp.vdot(g_rev, sim_rev)
        gx, gy = pull((s * g, s * g_rev))
        dx = put_rows(dx, blk.q0, blk.rows(dx, tile) + gx)
        dyg = put_rows(dyg, blk.c0, blk.cols(dyg, chunk) + gy)
        return dx, dyg, ds

    carry = varying(
        (jnp.zeros(xt.shape), jnp.zeros(yg.shape), jnp.zeros((), jnp.float32)), axis_name
    )
    dx, dyg, ds = _fold(body, carry, b=b, n_cols=n_cols, tile=tile, chunk=chunk)
    dy = jax.lax.psum_scatter(dyg, axis_name, scatter_dimension=0, tiled=True)
    return dx, dy, None, None, jax.lax.psum(ds, axis_name).astype(s_in.dtype)


_filip.defvjp(_filip_fwd, _filip_bwd)


@LOSSES.register("filip")
def filip_loss(
    x: jax.Array,
    y: jax.Array,
    scale: jax.Array,
    bias: jax.Array,
    *,
    axis_name: AxisName,
    x_tokens: jax.Array,
    y_tokens: jax.Array,
    x_token_mask: jax.Array,
    y_token_mask: jax.Array,
    tile_size: int = 32,
    chunk_size: int = 32,
    normalize_tokens: bool = True,
) -> tuple[jax.Array, dict[str, jax.Array]]:
    """FILIP token-wise InfoNCE (module docstring); x, y and bias are unused.

    `x_tokens` [b, Nx, d], `y_tokens` [b, Ny, d]: token features (any float dtype);
    `x_token_mask` [b, Nx], `y_token_mask` [b, Ny]: True for real tokens. `tile_size`:
    local x examples per block; `chunk_size`: gathered y examples per block (neither need
    divide the batch); `normalize_tokens`: L2-normalise each token here.
    """
    del x, y, bias
    b = x_tokens.shape[0]
    if y_tokens.shape[0] != b or x_tokens.shape[-1] != y_tokens.shape[-1]:
        raise ValueError(f"Token shapes do not pair: {x_tokens.shape} and {y_tokens.shape}.")
    if x_token_mask.shape != x_tokens.shape[:2] or y_token_mask.shape != y_tokens.shape[:2]:
        raise ValueError("Each token mask must be [b, N] like its tokens.")
    tile = block_size("tile_size", tile_size, b)
    chunk = block_size("chunk_size", chunk_size, b * jax.lax.axis_size(axis_name))
    prep = l2_normalize if normalize_tokens else (lambda t: t.astype(jnp.float32))
    return _filip(
        prep(x_tokens),
        prep(y_tokens),
        x_token_mask.astype(bool),
        y_token_mask.astype(bool),
        scale,
        axis_name,
        tile,
        chunk,
    )
