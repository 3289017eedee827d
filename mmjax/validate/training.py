"""Precision, attention, frozen and locked parameters, lr and wd groups, layer decay, token
dropping, EMA and init; the optimiser and the schedule."""

from collections.abc import Iterator

import jax.numpy as jnp
import ml_collections

from mmjax.config import Problem
from mmjax.errors import unknown_name
from mmjax.validate.core import Context, error_text, register


def _regex_problems(field: str, patterns) -> Iterator[Problem]:
    import re

    if isinstance(patterns, str):
        yield Problem(field, f"takes a tuple of regexes, e.g. ({patterns!r},), not a string.")
        return
    for i, pattern in enumerate(patterns):
        try:
            re.compile(pattern)
        except (re.error, TypeError) as e:
            yield Problem(f"{field}[{i}]", f"{pattern!r} is not a regex: {e}.")


def _rule_problems(field: str, rules) -> Iterator[Problem]:
    """((regex, multiplier), ...) rules of parameter groups."""
    for i, rule in enumerate(rules):
        pair = isinstance(rule, tuple | list) and len(rule) == 2
        if not pair or not isinstance(rule[1], int | float) or isinstance(rule[1], bool):
            yield Problem(f"{field}[{i}]", f"{rule!r} is not a (regex, multiplier) pair.")
        elif rule[1] < 0:
            yield Problem(f"{field}[{i}]", f"multiplier {rule[1]!r} must be >= 0.")
        else:
            yield from _regex_problems(f"{field}[{i}]", (rule[0],))


@register
def training_options(ctx: Context) -> Iterator[Problem]:
    """Parameter and moment dtypes, attention, frozen parameters and parameter groups,
    the EMA (and what reads it: evaluators' weights, teachers), and the run that
    initialises this one."""
    from mmjax import storage
    from mmjax.evals.registry import WEIGHTS
    from mmjax.models import layers

    config = ctx.config
    model, optim = config.model, config.optim
    for field, value in (
        ("model.param_dtype", model.get("param_dtype", "float32")),
        ("optim.moment_dtype", optim.get("moment_dtype", "float32")),
    ):
        if value not in ("float32", "bfloat16"):
            yield Problem(field, unknown_name("dtype", value, ("float32", "bfloat16")))
    attention = model.get("attention", "auto")
    if attention not in layers.ATTENTION_IMPLEMENTATIONS:
        yield Problem(
            "model.attention",
            unknown_name("attention", attention, layers.ATTENTION_IMPLEMENTATIONS),
        )
    yield from _regex_problems("optim.freeze", optim.get("freeze", ()))
    yield from _regex_problems("init.params", config.init.get("params", ()))
    for field in ("lr_mults", "wd_mults"):
        yield from _rule_problems(f"optim.{field}", optim.get(field, ()))
    decay = optim.get("layer_decay", 1.0)
    if not 0 < decay <= 1:
        yield Problem("optim.layer_decay", f"must be in (0, 1] (1: none), got {decay!r}.")
    for m in optim.get("layer_decay_towers", ()):
        if m not in model.towers:
            yield Problem("optim.layer_decay_towers", unknown_name("tower", m, list(model.towers)))
    for name, c in model.towers.items():
        drop = c.get("token_drop", 0.0)
        if isinstance(drop, int | float) and not 0 <= drop < 1:
            yield Problem(f"model.towers.{name}.token_drop", f"must be in [0, 1), got {drop!r}.")
    ema = float(config.get("ema", {}).get("decay", 0.0))
    if not 0 <= ema < 1:
        yield Problem("ema.decay", f"must be in [0, 1) (0: no EMA), e.g. 0.999; got {ema!r}.")
    needs_ema = "needs an EMA: set config.ema.decay (e.g. 0.999)."
    for name, c in config.evals.items():
        weights = c.get("weights", "raw") if isinstance(c, ml_collections.ConfigDict) else "raw"
        if weights not in WEIGHTS:
            yield Problem(f"evals.{name}.weights", unknown_name("weights", weights, WEIGHTS))
        elif weights != "raw" and ema == 0:
            yield Problem(f"evals.{name}.weights", f"{weights!r} {needs_ema}")
    for name, t in config.objectives.items():
        teacher = t.get("teacher", "self") if isinstance(t, ml_collections.ConfigDict) else "self"
        if teacher not in ("self", "ema"):
            yield Problem(
                f"objectives.{name}.teacher", unknown_name("teacher", teacher, ("self", "ema"))
            )
        elif teacher == "ema" and ema == 0:
            yield Problem(f"objectives.{name}.teacher", f"'ema' {needs_ema}")
    source = config.init.get("workdir", "")
    if source and not storage.isdir(storage.join(source, "checkpoints")):
        yield Problem(
            "init.workdir",
            f"{source!r} holds no checkpoints folder: name the workdir of the run whose"
            " parameters start this one.",
        )


# ------------------------------------------------------------------ optimisation


@register
def optimization(ctx: Context) -> Iterator[Problem]:
    """The schedule and lr scaling by name; a schedule that builds."""
    from mmjax import optim

    config = ctx.config
    if config.schedule.name not in optim.SCHEDULES:
        known = optim.SCHEDULES.names()
        yield Problem("schedule.name", unknown_name("schedule", config.schedule.name, known))
        return
    if config.optim.lr_scaling not in optim.LR_SCALING:
        known = list(optim.LR_SCALING)
        yield Problem(
            "optim.lr_scaling", unknown_name("lr scaling", config.optim.lr_scaling, known)
        )
        return
    try:
        schedule = optim.make_schedule(config)
        float(jnp.asarray(schedule(0)))
    except (ValueError, TypeError) as e:
        yield Problem("schedule", error_text(e))
