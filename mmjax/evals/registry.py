"""`config.evals` -> evaluators, each `run(params) -> {metric: value}`.

An entry of `config.evals` names its evaluator by `type` and says how often it runs
in the train loop (`every` steps and at the end; 0 = never in the loop, standalone only):

    c.evals.zeroshot = dict(type="zeroshot", every=1000, batch_size=256, dataset="synthetic")

Adding an evaluator is one new module with a registered factory
`factory(eval_config, context) -> Evaluator`.

`weights` picks the parameters an evaluator sees: "raw" (the trained ones), "ema" (their
moving average, `config.ema.decay` > 0) or "both"; EMA results are named
"<evaluator>/ema/<metric>" beside the raw "<evaluator>/<metric>".
"""

import dataclasses
from typing import Any, Protocol

import ml_collections
from jax.sharding import Mesh

from mmjax.data.modalities import modality_tokenizer
from mmjax.data.tokenizers import Tokenizer
from mmjax.models import Model
from mmjax.registry import Registry

EVALUATORS = Registry("evaluator")

# Fields every evaluator entry has: what runs, how often in the train loop, batch size.
COMMON_DEFAULTS = dict(type="", every=0, batch_size=256, weights="raw")
# `weights` -> (name suffix, use the EMA) of each evaluation it asks for.
WEIGHTS = {"raw": (("", False),), "ema": (("/ema", True),), "both": (("", False), ("/ema", True))}


class Evaluator(Protocol):
    def run(self, params: Any) -> dict[str, float]: ...


@dataclasses.dataclass(frozen=True)
class EvalContext:
    """What every evaluator may need besides its own config."""

    model: Model
    mesh: Mesh
    config: ml_collections.ConfigDict  # the whole run config

    def tokenizer(self, modality: str) -> Tokenizer:
        """The tokenizer of a text modality, as the training data uses it."""
        if modality not in self.config.data.modalities:
            raise ValueError(
                f"No text modality {modality!r} in config.data.modalities"
                f" ({list(self.config.data.modalities)}): set the evaluator's text field."
            )
        return modality_tokenizer(self.config, modality)


@dataclasses.dataclass(frozen=True)
class Scheduled:
    name: str
    every: int
    evaluator: Evaluator
    weights: str = "raw"

    def due(self, step: int, last: bool) -> bool:
        return self.every > 0 and (step % self.every == 0 or last)

    def run(self, params: Any, ema_params: Any = None) -> dict[str, float]:
        """Prefixed results on the raw parameters, their EMA, or both (`weights`)."""
        results = {}
        for suffix, ema in WEIGHTS[self.weights]:
            if ema and ema_params is None:
                raise ValueError(f"Evaluator {self.name!r}: weights={self.weights!r} but no EMA.")
            out = self.evaluator.run(ema_params if ema else params)
            results |= prefixed(self.name + suffix, out)
        return results


def build_evaluators(context: EvalContext) -> list[Scheduled]:
    """One evaluator per entry of `config.evals`, in config order."""
    out = []
    has_ema = float(context.config.get("ema", {}).get("decay", 0.0)) > 0
    for name, c in context.config.evals.items():
        factory = EVALUATORS.get(c.type)
        every = c.get("every", COMMON_DEFAULTS["every"])
        weights = c.get("weights", COMMON_DEFAULTS["weights"])
        if weights not in WEIGHTS:
            raise ValueError(
                f"config.evals.{name}.weights={weights!r}: use one of {list(WEIGHTS)}."
            )
        if any(ema for _, ema in WEIGHTS[weights]) and not has_ema:
            raise ValueError(
                f"config.evals.{name}.weights={weights!r} needs an EMA: set config.ema.decay."
            )
        out.append(Scheduled(name, every, factory(c, context), weights))
    return out


def with_defaults(entry: ml_collections.ConfigDict, defaults: dict) -> ml_collections.ConfigDict:
    """An evaluator's config entry completed from its defaults; unknown fields fail.

    Entries list only what differs from the defaults, and a misspelt field fails at
    start, naming the fields the evaluator knows.
    """
    unknown = sorted(set(entry) - set(defaults))
    if unknown:
        raise ValueError(
            f"Unknown field(s) {unknown} in an evaluator of type {entry.get('type')!r};"
            f" known: {', '.join(sorted(defaults))}."
        )
    return ml_collections.ConfigDict({**defaults, **entry.to_dict()})


def prefixed(name: str, results: dict[str, float]) -> dict[str, float]:
    """{"top1": x} -> {"zeroshot/top1": x}: one namespace per evaluator in metrics."""
    return {f"{name}/{k}": v for k, v in results.items()}
