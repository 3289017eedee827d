"""What the signal stems (audio, sensor traces) do before cutting patches: standardise,
and draw random span masks from one example's key (SpecAugment's time and frequency
masks, masked patches of a sensor trace).

A stem draws its masks with `jax.vmap` over the per-example keys the tower receives, so
an example's mask depends on its key alone: the same keys give the same masks in every
GradCache pass, on any number of devices, and after a resume.
"""

import jax
import jax.numpy as jnp

NORMALIZATIONS = ("example", "fixed", "none")


def standardize(x: jax.Array, how: str, mean, std, axes: tuple[int, ...]) -> jax.Array:
    """float32 x standardised: "example" by its own mean and std over `axes` (per
    utterance, per channel of a trace), "fixed" by the given `mean` and `std` (dataset
    statistics, broadcast against x's last axis), "none" unchanged."""
    if how == "example":
        mean = x.mean(axis=axes, keepdims=True)
        return (x - mean) / (x.std(axis=axes, keepdims=True) + 1e-5)
    if how == "fixed":
        return (x - jnp.asarray(mean, jnp.float32)) / jnp.asarray(std, jnp.float32)
    if how == "none":
        return x
    raise ValueError(f"Unknown normalisation {how!r}; use one of {NORMALIZATIONS}.")


def spans(u: jax.Array, length: int, max_width: int) -> jax.Array:
    """bool [length], True inside one span per row of uniform draws `u` [count, 2] (the
    spans may overlap): its width uniform in 0..max_width (clipped to `length`), its start
    uniform among those that keep it inside, as SpecAugment draws them (Park et al. 2019,
    section 2)."""
    max_width = max(min(max_width, length), 0)
    width = jnp.minimum(jnp.floor(u[:, 0] * (max_width + 1)), max_width).astype(jnp.int32)
    start = jnp.floor(u[:, 1] * (length - width + 1)).astype(jnp.int32)
    start = jnp.minimum(start, length - width)
    positions = jnp.arange(length)
    inside = (positions >= start[:, None]) & (positions < (start + width)[:, None])
    return inside.any(axis=0)


def span_mask(key: jax.Array, length: int, count: int, max_width: int) -> jax.Array:
    """`count` random spans of up to `max_width` in [0, length) from one key (`spans`).

    All draws come from one call of the generator: each threefry call is a sizeable
    compiled program, and a stem makes these under a vmap over the batch."""
    return spans(jax.random.uniform(key, (count, 2)), length, max_width)
