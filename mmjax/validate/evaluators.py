"""Evaluator entries: registered types, their fields, and the modalities they name."""

import inspect
from collections.abc import Iterator

import ml_collections

from mmjax.config import Problem
from mmjax.errors import known_list, suggest, unknown_name
from mmjax.validate.core import Context, register

# Fields of an evaluator entry that name modalities, which must have towers.
MODALITY_FIELDS = ("modality", "text", "modalities")


def evaluator_defaults(factory) -> dict | None:
    """The `DEFAULTS` of the module an evaluator factory lives in (every evaluator module
    has one, completed by `with_defaults`), or None."""
    defaults = getattr(inspect.getmodule(factory), "DEFAULTS", None)
    return defaults if isinstance(defaults, dict) else None


@register
def evaluators(ctx: Context) -> Iterator[Problem]:
    """Known evaluator types and datasets, known fields, modalities that have towers."""
    from mmjax import evals
    from mmjax.evals.datasets import EVAL_DATASETS

    towers = ctx.config.model.towers
    for name, e in ctx.config.evals.items():
        field = f"evals.{name}"
        if not isinstance(e, ml_collections.ConfigDict) or "type" not in e:
            yield Problem(field, "is not an evaluator entry: give it a type (zeroshot, ...).")
            continue
        if e.type not in evals.EVALUATORS:
            known = evals.EVALUATORS.names()
            yield Problem(f"{field}.type", unknown_name("evaluator", e.type, known))
            continue
        if e.get("every", 0) < 0 or e.get("batch_size", 1) < 1:
            yield Problem(field, "every must be >= 0 and batch_size >= 1.")
        defaults = evaluator_defaults(evals.EVALUATORS.get(e.type))
        if defaults is None:
            continue
        unknown = sorted(set(e) - set(defaults))
        if unknown:
            known = known_list(defaults)
            hint = suggest(unknown[0], defaults)
            yield Problem(
                field, f"unknown field(s) {unknown} for type {e.type!r}.{hint} Known: {known}."
            )
            continue
        full = {**defaults, **e.to_dict()}
        dataset = str(full.get("dataset", "")).partition(":")[0]
        if "dataset" in full and dataset not in EVAL_DATASETS:
            known = EVAL_DATASETS.names()
            yield Problem(f"{field}.dataset", unknown_name("evaluation dataset", dataset, known))
        for key in MODALITY_FIELDS:
            if key not in full:
                continue
            names = full[key] if isinstance(full[key], tuple | list) else (full[key],)
            for m in names:
                if m not in towers:
                    yield Problem(
                        f"{field}.{key}",
                        f"{m!r} has no tower: towers are {list(towers)}; set {key} (or"
                        f" every=0 and remove the entry) for this run.",
                    )
