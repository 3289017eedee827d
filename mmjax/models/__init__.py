"""Model towers and the registry that builds them from `config.model.name`."""

from mmjax.models import towers  # noqa: F401  (registers models)
from mmjax.models.registry import MODELS, build_model

__all__ = ["MODELS", "build_model"]
