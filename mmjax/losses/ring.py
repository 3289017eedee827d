"""The ring traversal shared by the exact blockwise losses (`softmax_ring`, `sigmoid_ring`,
`multi_positive_ring`).

Every device keeps its own rows of one modality (the "queries") and sees every row of the
other modality pass by: its own rows are cut into chunks, and each chunk travels once round
the ring of devices by `ppermute`, together with whatever per-column state travels with it
(column statistics, the chunk's gradient). At each stop the visiting chunk is scored against
the local queries one tile of `tile` rows at a time. So the only live arrays are a
[tile, chunk] block of logits and a few [chunk, d] buffers, whatever the global batch B.

A local batch that a tile or chunk size does not divide is handled without padding: the
last tile (chunk) starts early so that it fits, and `Tile.valid` masks out the rows
(columns) that the previous one already covered.
"""

from collections.abc import Callable, Sequence
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp

AxisName = str | Sequence[str]
Carry = Any  # a pytree
Travel = Any  # a pytree, sent round the ring with its chunk


class Tile(NamedTuple):
    """Where a [tile, chunk] block of logits lies in the global batch."""

    start: jax.Array  # first local query row of the tile
    rows: jax.Array  # [tile] global indices of the query rows
    cols: jax.Array  # [chunk] global indices of the visiting columns
    valid: jax.Array | None  # [tile, chunk]; False where an earlier tile covered the pair


def block_size(option: str, value: int, local_batch: int) -> int:
    """A tile or chunk size, checked, and capped at the local batch (one block is enough)."""
    if not isinstance(value, int) or isinstance(value, bool) or value < 1:
        raise ValueError(f"{option} must be a positive int, got {value!r}.")
    return min(value, local_batch)


def ragged_start(index: jax.Array, size: int, total: int) -> tuple[jax.Array, jax.Array | None]:
    """Start of block `index` and, if `size` does not divide `total`, which rows are new."""
    start = jnp.minimum(index * size, total - size)
    if total % size == 0:
        return start, None
    return start, start + jnp.arange(size) >= index * size


def ring_fold(
    tile_fn: Callable[[Tile, Carry, Travel], tuple[Carry, Travel]],
    carry: Carry,
    depart: Callable[[Carry, jax.Array], Travel],
    arrive: Callable[[Carry, jax.Array, Travel], Carry],
    *,
    local_batch: int,
    tile: int,
    chunk: int,
    axis_name: AxisName,
    local_cols: int | None = None,
) -> Carry:
    """Folds `tile_fn` over every (local query tile, global column chunk) pair.

    For each local chunk start `c0`: `depart(carry, c0)` builds what travels, a tuple
    (the chunk's rows, then its column state); after a full circle it is home again and
    `arrive(carry, c0, travel)` stores it. `carry` holds the per-query state and must be
    device-varying (`jax.lax.pcast(..., to='varying')`, see `varying`). `local_batch` is
    the number of local query rows, `local_cols` that of local column rows (default: the
    same; they differ when, say, each image has K captions).
    """
    n_cols = local_batch if local_cols is None else local_cols
    n_dev = jax.lax.axis_size(axis_name)
    me = jax.lax.axis_index(axis_name)
    n_tiles = -(-local_batch // tile)
    n_chunks = -(-n_cols // chunk)
    perm = [(i, (i + 1) % n_dev) for i in range(n_dev)]

    def chunk_body(c: jax.Array, carry: Carry) -> Carry:
        c0, col_new = ragged_start(c, chunk, n_cols)
        travel = depart(carry, c0)

        def stop_body(k: jax.Array, state: tuple[Carry, Travel]) -> tuple[Carry, Travel]:
            src = (me - k) % n_dev  # where the visiting chunk comes from
            cols = src * n_cols + c0 + jnp.arange(chunk)
            # The chunk's rows leave for the next stop before they are scored here, so that
            # the transfer can overlap the compute; the state it updates leaves after.
            ahead = jax.lax.ppermute(state[1][0], axis_name, perm) if n_dev > 1 else None

            def tile_body(q: jax.Array, state: tuple[Carry, Travel]) -> tuple[Carry, Travel]:
                q0, row_new = ragged_start(q, tile, local_batch)
                rows = me * local_batch + q0 + jnp.arange(tile)
                valid = None
                if row_new is not None or col_new is not None:
                    r = jnp.ones((tile,), bool) if row_new is None else row_new
                    k_ = jnp.ones((chunk,), bool) if col_new is None else col_new
                    valid = r[:, None] & k_[None, :]
                return tile_fn(Tile(q0, rows, cols, valid), *state)

            carry, travel = jax.lax.fori_loop(0, n_tiles, tile_body, state)
            if n_dev > 1:
                travel = (ahead, *jax.lax.ppermute(travel[1:], axis_name, perm))
            return carry, travel

        carry, travel = jax.lax.fori_loop(0, n_dev, stop_body, (carry, travel))
        return arrive(carry, c0, travel)

    return jax.lax.fori_loop(0, n_chunks, chunk_body, carry)


def scale_in_place(x: jax.Array, factor: jax.Array, block: int) -> jax.Array:
    """`x * factor`, one block of rows at a time, so that XLA updates x's buffer in place."""
    n = x.shape[0]

    def body(i: jax.Array, x: jax.Array) -> jax.Array:
        start, new = ragged_start(i, block, n)
        rows = jax.lax.dynamic_slice_in_dim(x, start, block)
        scaled = rows * factor if new is None else jnp.where(new[:, None], rows * factor, rows)
        return put_rows(x, start, scaled)

    return jax.lax.fori_loop(0, -(-n // block), body, x)


def pair_masks(t: Tile) -> tuple[jax.Array, jax.Array, jax.Array | None]:
    """(positive pairs, pairs that are not negatives, counted pairs or None for all)."""
    diag = t.rows[:, None] == t.cols[None, :]
    if t.valid is None:
        return diag, diag, None
    return diag & t.valid, diag | ~t.valid, t.valid


def varying(tree: Any, axis_name: AxisName) -> Any:
    """Marks freshly created loop state as per-device, as shard_map's type checks require."""
    return jax.tree.map(lambda x: jax.lax.pcast(x, axis_name, to="varying"), tree)


def rows_of(x: jax.Array, start: jax.Array, size: int) -> jax.Array:
    """`size` rows of `x` from `start`, in float32 (cast per block: no full float32 copy)."""
    return jax.lax.dynamic_slice_in_dim(x, start, size).astype(jnp.float32)


def put_rows(x: jax.Array, start: jax.Array, rows: jax.Array) -> jax.Array:
    return jax.lax.dynamic_update_slice_in_dim(x, rows, start, axis=0)
