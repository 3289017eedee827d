"""The multi-tower model: one tower per modality, and each objective term's logit scale.

`config.model.towers` maps modality names to tower configs (their `type` picks the code,
models/registry.py); a tower with `share` set reuses another modality's tower (two
augmented views of one image, say). Each term of `config.objectives` owns a learned
log-scale t (scale = exp(t), clamped to [0, log max_scale] after each update, as open_clip
does; see `clamp_temperatures`) and, for sigmoid-style losses, a learned bias b.

Parameters: {modality: tower params, ..., "objectives": {term: {"t", "b"?}}}.
"""

import dataclasses
import math
import zlib
from collections.abc import Mapping, Sequence
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections

from mmjax import shapes
from mmjax.models.registry import TOWERS

OBJECTIVES_KEY = "objectives"  # the parameters of the objective terms; not a modality name


@dataclasses.dataclass(frozen=True)
class LogitInit:
    """Initial log-scale and bias of one objective term, and the cap of its scale."""

    temperature_init: float = math.log(1 / 0.07)
    max_scale: float = 100.0
    bias_init: float | None = None


class LogitParams(nn.Module):
    """The learned (scale, bias) of one term: scale = exp(t), bias = b or 0."""

    init: LogitInit

    @nn.compact
    def __call__(self) -> tuple[jax.Array, jax.Array]:
        t = self.param("t", nn.initializers.constant(self.init.temperature_init), (), jnp.float32)
        bias = jnp.zeros((), jnp.float32)
        if self.init.bias_init is not None:
            bias = self.param("b", nn.initializers.constant(self.init.bias_init), (), jnp.float32)
        return jnp.exp(t), bias


class TermLogits(nn.Module):
    """Every term's `LogitParams`, nested under the term's name."""

    terms: Sequence[tuple[str, LogitInit]]

    @nn.compact
    def __call__(self) -> dict[str, tuple[jax.Array, jax.Array]]:
        return {name: LogitParams(init, name=name)() for name, init in self.terms}


def modality_keys(keys: jax.Array, modality: str) -> jax.Array:
    """Per-example keys for one modality: folded with a stable id of its name, so that a
    modality's randomness does not depend on which others are present."""
    salt = zlib.crc32(modality.encode()) & 0x7FFFFFFF
    return jax.vmap(lambda k: jax.random.fold_in(k, salt))(keys)


class Model(nn.Module):
    """Towers by modality, plus the logit parameters of every objective term.

    `towers`: ((modality, Tower factory), ...); `shares`: ((modality, modality whose
    tower it uses), ...); `terms`: ((term, LogitInit), ...).
    """

    towers: Sequence[tuple[str, Any]]
    shares: Sequence[tuple[str, str]] = ()
    terms: Sequence[tuple[str, LogitInit]] = ()
    heads: Sequence[tuple[str, str, Any]] = ()  # (name, modality it reads, head factory)
    head_contexts: Sequence[tuple[str, str]] = ()  # (head, modality whose tokens it attends to)

    def setup(self) -> None:
        self._towers = {name: build(name=name) for name, build in self.towers}
        self._logits = TermLogits(self.terms, name=OBJECTIVES_KEY)
        self._heads = {name: build(name=name) for name, _, build in self.heads}

    @property
    def head_modalities(self) -> tuple[str, ...]:
        """The modalities the self-supervised heads read (models/heads.py)."""
        return tuple(
            dict.fromkeys([m for _, m, _ in self.heads] + [m for _, m in self.head_contexts])
        )

    @property
    def modalities(self) -> tuple[str, ...]:
        return tuple(n for n, _ in self.towers) + tuple(n for n, _ in self.shares)

    def tower_of(self, modality: str) -> nn.Module:
        owner = dict(self.shares).get(modality, modality)
        if owner not in self._towers:
            raise ValueError(f"No tower for modality {modality!r}; towers: {self.modalities}.")
        return self._towers[owner]

    def encode(
        self,
        modality: str,
        x: jax.Array,
        keys: jax.Array | None = None,
        train: bool = False,
        with_tokens: bool = False,
    ) -> dict[str, jax.Array]:
        """One modality's outputs: "features", "embedding" (and "tokens", "token_mask").

        An input with one more leading axis than the tower's examples ([B, K, ...]: K
        captions of each example) goes through the tower as B*K examples, each with its own
        key, and its outputs keep the [B, K, ...] layout.
        """
        tower = self.tower_of(modality)
        rank = getattr(tower.stem, "example_rank", None)
        if rank is not None:
            shapes.tower_input(modality, x, rank, keys)
        extra = 0 if rank is None else x.ndim - 1 - rank
        if extra <= 0:
            return tower(x, keys=keys, train=train, with_tokens=with_tokens)
        lead = x.shape[: 1 + extra]
        flat = x.reshape(-1, *x.shape[1 + extra :])
        if keys is not None:  # example i's k-th row draws from fold_in(key_i, k)
            rows = jnp.arange(math.prod(lead[1:]))
            fold = lambda key: jax.vmap(lambda j: jax.random.fold_in(key, j))(rows)
            keys = jax.vmap(fold)(keys).reshape(-1)
        out = tower(flat, keys=keys, train=train, with_tokens=with_tokens)
        return {k: v.reshape(*lead, *v.shape[1:]) for k, v in out.items()}

    def embed(self, modality: str, x: jax.Array) -> jax.Array:
        """The normalised joint-space embedding of `x` (evaluation)."""
        return self.encode(modality, x)["embedding"]

    def features(self, modality: str, x: jax.Array) -> jax.Array:
        """The pooled features before the projection (linear probes, kNN)."""
        return self.encode(modality, x)["features"]

    def token_embeddings(self, modality: str, x: jax.Array) -> tuple[jax.Array, jax.Array]:
        """(every token projected and normalised [B, N, d], token mask [B, N]): token-wise
        similarities (FILIP) at evaluation."""
        out = self.encode(modality, x, with_tokens=True)
        return out["tokens"], out["token_mask"]

    def logit_params(self) -> dict[str, tuple[jax.Array, jax.Array]]:
        """{term: (scale, bias)}."""
        return self._logits()

    def __call__(
        self,
        inputs: Mapping[str, jax.Array],
        keys: jax.Array | None = None,
        train: bool = False,
        with_tokens: Sequence[str] = (),
    ) -> dict[str, dict[str, jax.Array]]:
        """{modality: outputs} for every modality of `inputs` that has a tower.

        `keys`: one PRNG key per example ([B]); each modality draws from its own fold.
        """
        out = {}
        direct = {m for n, m, _ in self.heads if not hasattr(self._heads[n], "corrupt")}
        direct |= {m for _, m in self.head_contexts}  # their tokens are a head's context
        for modality in (m for m in self.modalities if m in inputs):
            k = None if keys is None else modality_keys(keys, modality)
            tokens = modality in with_tokens or modality in direct
            out[modality] = self.encode(modality, inputs[modality], k, train, tokens)
        contexts = dict(self.head_contexts)
        for name, modality, _ in self.heads:  # per-example losses {"values": [B]}
            present = modality in inputs and contexts.get(name, modality) in out
            if present and (train or self.is_initializing()):
                out[name] = {"values": self._head(name, modality, inputs, out, keys, train)}
        self.logit_params()  # so that init creates every term's parameters
        return out

    def _head(self, name, modality, inputs, out, keys, train) -> jax.Array:
        head = self._heads[name]
        k = None if keys is None else modality_keys(keys, name)
        if hasattr(head, "corrupt"):  # the tower runs again, on the head's own input
            if k is None:  # init: any keys will do
                k = jax.random.split(jax.random.key(0), inputs[modality].shape[0])
            x, aux = head.corrupt(inputs[modality], k, train)
            tower_k = None if keys is None else modality_keys(keys, modality)
            context = dict(self.head_contexts).get(name)
            if context is not None:  # cross-attention to another tower's tokens
                context = (out[context]["hidden"], out[context]["token_mask"])
            return head(self.encode(modality, x, tower_k, train, True), aux, k, train, context)
        return head(out[modality], inputs[modality], k, train)


def build_model(
    model_config: ml_collections.ConfigDict, objectives: ml_collections.ConfigDict | None = None
) -> Model:
    """The model of `config.model`, with logit parameters for `config.objectives`."""
    towers, shares = [], []
    for name, c in model_config.towers.items():
        if name == OBJECTIVES_KEY:
            raise ValueError(f"{OBJECTIVES_KEY!r} is reserved; rename config.model.towers.{name}.")
        if c.share:
            shares.append((name, c.share))
        else:
            towers.append((name, TOWERS.get(c.type).build(c, model_config)))
    terms = [
        (name, LogitInit(t.temperature_init, t.max_scale, t.bias_init))
        for name, t in (objectives or {}).items()
    ]
    from mmjax.models.heads import HEADS

    heads = [
        (name, c.tower, HEADS.get(c.type).build(c, model_config))
        for name, c in model_config.get("heads", {}).items()
    ]
    contexts = [
        (name, c.cross) for name, c in model_config.get("heads", {}).items() if c.get("cross")
    ]
    return Model(tuple(towers), tuple(shares), tuple(terms), tuple(heads), tuple(contexts))


def clamp_temperatures(params: dict, objectives: ml_collections.ConfigDict) -> dict:
    """t clamped to [0, log max_scale] in place of open_clip's `logit_scale.clamp_`.

    Applied after each update, so the gradient of t keeps flowing below the cap (a
    `min(exp(t), cap)` in the forward pass would stop it for good once the cap is hit).
    """
    logits = params.get(OBJECTIVES_KEY)
    if not logits:
        return params
    clamped = {
        term: {**p, "t": jnp.clip(p["t"], 0.0, math.log(objectives[term].max_scale))}
        for term, p in logits.items()
    }
    return {**params, OBJECTIVES_KEY: clamped}
