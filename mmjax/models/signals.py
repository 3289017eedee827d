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


def span_mask(key: jax.Array, length: int, count: int, max_width: int) -> jax.Array:
    """bool [length], True inside `count` spans (they may overlap), each of a width drawn
    uniformly from 0..max_width (clipped to `length`) at a start drawn uniformly among
    those that keep it inside, as SpecAugment does (Park et al. 2019, section 2)."""
    positions = jnp.arange(length)
    if count <= 0 or max_width <= 0:
        return jnp.zeros((length,), bool)
    max_width = min(max_width, length)

    def one(k: jax.Array) -> jax.Array:
        k_width, k_start = jax.random.split(k)
        width = jax.random.randint(k_width, (), 0, max_width + 1)
        start = jax.random.randint(k_start, (), 0, length - width + 1)
        return (positions >= start) & (positions < start + width)

    return jax.vmap(one)(jax.random.split(key, count)).any(axis=0)
