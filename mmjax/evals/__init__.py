"""Evaluations selected by `config.evals`: zero-shot, retrieval, linear probe, kNN."""

# Importing these modules registers their evaluators and datasets.
from mmjax.evals import (  # noqa: F401
    image_folder,
    karpathy,
    knn,
    linear_probe,
    retrieval,
    tfds_source,
    zeroshot,
)
from mmjax.evals.registry import EVALUATORS, EvalContext, build_evaluators, prefixed

__all__ = ["EVALUATORS", "EvalContext", "build_evaluators", "prefixed"]
