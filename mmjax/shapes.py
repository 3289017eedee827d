"""Shape, rank and dtype assertions at the towers' and the losses' boundaries (chex).

They run while tracing (shapes are static), so they cost nothing per step, and turn a
mismatch that would surface deep inside a convolution or a ring loop into a message that
names the modality or the objective term and the shape it expects. The config checks
(mmjax/validate/) catch the mismatches a config can cause before anything is traced;
these guard the code paths that bypass the config (evaluation, export, tests, new code).
"""

import chex
import jax
import jax.numpy as jnp


def tower_input(modality: str, x: jax.Array, example_rank: int, keys: jax.Array | None) -> None:
    """`x` is [B, <one example>] or [B, K, <one example>] (K rows per example), and `keys`,
    if given, one per example."""
    example = ", ".join(["..."] * example_rank) if example_rank else ""
    want = f"[B, {example}] or [B, K, {example}]" if example else "[B] or [B, K]"
    chex.assert_rank(
        x,
        {example_rank + 1, example_rank + 2},
        custom_message=f"tower {modality!r} takes inputs {want} (one example has rank"
        f" {example_rank}), got shape {tuple(x.shape)}",
    )
    if keys is not None:
        chex.assert_shape(
            keys,
            (x.shape[0],),
            custom_message=f"tower {modality!r}: one PRNG key per example, [{x.shape[0]}]",
        )


def term_inputs(
    term: str, x_name: str, x: jax.Array, y_name: str, y: jax.Array, scale, bias
) -> None:
    """Embedding rows [n, d] of both modalities of a term, floating point, the same width
    d; scalar scale and bias."""
    for name, rows in ((x_name, x), (y_name, y)):
        chex.assert_rank(
            rows,
            2,
            custom_message=f"objective {term!r}: {name} embeddings must be rows [n, d],"
            f" got shape {tuple(rows.shape)}",
        )
        if not jnp.issubdtype(rows.dtype, jnp.floating):
            raise AssertionError(
                f"objective {term!r}: {name} embeddings must be floating point, got {rows.dtype}"
            )
    chex.assert_equal_shape_suffix(
        [x, y],
        1,
        custom_message=f"objective {term!r}: {x_name} {tuple(x.shape)} and {y_name}"
        f" {tuple(y.shape)} embeddings must have the same width (model.embed_dim)",
    )
    chex.assert_shape(
        [scale, bias], (), custom_message=f"objective {term!r}: scale and bias are scalars"
    )
