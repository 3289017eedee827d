"""Evaluations selected by `config.evals`: zero-shot classification (more to come)."""

from mmjax.evals import zeroshot  # noqa: F401  (registers evaluators)
from mmjax.evals.registry import EVALUATORS, EvalContext, build_evaluators, prefixed

__all__ = ["EVALUATORS", "EvalContext", "build_evaluators", "prefixed"]
