"""Objective terms: their loss, the modalities they name, and the inputs the loss declares."""

import math
from collections.abc import Iterator

from mmjax.config import Problem
from mmjax.errors import suggest, unknown_name
from mmjax.validate.core import Context, register


@register
def objectives(ctx: Context) -> Iterator[Problem]:
    """Known losses over two modalities that a tower provides and the data holds; labels
    that the batch has; options in range."""
    from mmjax.losses import LOSSES
    from mmjax.losses.objectives import EXAMPLE
    from mmjax.losses.registry import describe

    config = ctx.config
    towers, data_modalities = config.model.towers, config.data.modalities
    if not config.objectives:
        yield Problem(
            "objectives", "is empty: add a term, e.g. mmconfig.objective('softmax', ...)."
        )
    for name, t in config.objectives.items():
        field = f"objectives.{name}"
        if t.loss not in LOSSES:
            yield Problem(f"{field}.loss", unknown_name("loss", t.loss, LOSSES.names()))
            continue
        pair = tuple(t.modalities)
        if len(pair) != 2 or not all(isinstance(m, str) for m in pair):
            yield Problem(f"{field}.modalities", f"must name two modalities, got {pair!r}.")
            continue
        heads = config.model.get("heads", {})  # a head's per-example values (models/heads.py)
        mixes = config.get("patchmix", {})  # made in the step from the batch (data/patchmix.py)
        for m in pair:
            if m in heads:
                continue
            if m not in towers:
                yield Problem(
                    f"{field}.modalities",
                    f"{m!r} has no tower: towers are {list(towers)}.{suggest(m, towers)}",
                )
            elif m not in data_modalities and m not in mixes:
                yield Problem(
                    f"{field}.modalities",
                    f"{m!r} is not in the batch: config.data.modalities has"
                    f" {list(data_modalities)}.",
                )
        inputs, options = describe(t.loss)
        for side in ("x", "y", ""):
            # "": the term's own labels, which a loss without labels ignores (a term's
            # loss can switch without other changes) but which must still be a batch key.
            if side and f"{side}_labels" not in inputs:
                continue
            key = (t[f"{side}_labels"] or t.labels) if side else t.labels
            if not key and not side:
                continue
            if not key:
                yield Problem(
                    f"{field}.labels",
                    f"loss {t.loss!r} needs labels: set labels to a batch key (e.g. 'label')"
                    f" or {EXAMPLE!r}.",
                )
            elif key != EXAMPLE and key not in data_modalities:
                yield Problem(
                    f"{field}.labels",
                    f"{key!r} is not in the batch: config.data.modalities has"
                    f" {list(data_modalities)}.{suggest(key, data_modalities)}",
                )
        for option in options:
            value = t.get(option)
            not_int = isinstance(value, bool) or not isinstance(value, int)
            if option.endswith("_size") and value is not None and (not_int or value < 1):
                yield Problem(f"{field}.{option}", f"must be a positive int, got {value!r}.")
        for key, ok, wanted in (
            ("weight", lambda v: math.isfinite(v), "must be finite"),
            ("temperature_init", lambda v: math.isfinite(v), "must be finite"),
            (
                "max_scale",
                lambda v: math.isfinite(v) and v >= 1,
                "must be >= 1 (t <= log max_scale)",
            ),
        ):
            if not ok(float(t[key])):
                yield Problem(f"{field}.{key}", f"{wanted}, got {t[key]!r}.")
                break
        else:
            top = math.log(t.max_scale)
            if not 0 <= t.temperature_init <= top:
                yield Problem(
                    f"{field}.temperature_init",
                    f"{t.temperature_init!r} is outside [0, log max_scale = {top:.4g}], the"
                    " range t is clamped to after each update; the scale is exp(t), e.g."
                    f" {math.log(1 / 0.07):.4g} for CLIP's 1/0.07.",
                )
