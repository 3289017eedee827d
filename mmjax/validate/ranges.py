"""Counts, rates and fractions in range; the batch against the devices; the mesh; dtypes and
remat policies by name."""

import math
from collections.abc import Iterator

import ml_collections

from mmjax.config import Problem
from mmjax.errors import unknown_name
from mmjax.validate.core import Context, error_text, register

POSITIVE = (
    "total_steps",
    "model.embed_dim",
    "log_every",
    "ckpt_every",
    "keep_ckpts",
    "preemption_check_every",
    "optim.lr_base_batch",
    "data.cycle_length",
    "data.synthetic.num_train",
    "data.synthetic.num_eval",
)
NON_NEGATIVE = (
    "stop_at_step",
    "max_nonfinite_in_a_row",
    "optim.lr",
    "optim.weight_decay",
    "optim.grad_clip",
    "schedule.warmup_steps",
    "schedule.cooldown_steps",
    "data.num_threads",
    "data.prefetch",
    "data.shuffle_buffer",
    "data.synthetic.captions",
    "data.worker_processes",
    "data.device_prefetch",
    "profile.start",
    "profile.steps",
    "init.step",
)
UNIT_INTERVAL = ("optim.b1", "optim.b2", "schedule.end_factor", "schedule.cooldown_fraction")


def _get(config: ml_collections.ConfigDict, path: str):
    node = config
    for part in path.split("."):
        if not isinstance(node, ml_collections.ConfigDict) or part not in node:
            return None
        node = node[part]
    return node


@register
def ranges(ctx: Context) -> Iterator[Problem]:
    """Counts, rates and fractions within their range."""
    for fields, ok, wanted in (
        (POSITIVE, lambda v: v > 0, "must be positive"),
        (NON_NEGATIVE, lambda v: v >= 0, "must be >= 0"),
        (UNIT_INTERVAL, lambda v: 0 <= v <= 1, "must be in [0, 1]"),
    ):
        for field in fields:
            value = _get(ctx.config, field)
            if isinstance(value, int | float) and not (math.isfinite(value) and ok(value)):
                yield Problem(field, f"{wanted}, got {value!r}.")
    eps = _get(ctx.config, "optim.eps")
    if isinstance(eps, float) and not eps > 0:
        yield Problem("optim.eps", f"must be > 0, got {eps!r}.")


@register
def batch(ctx: Context) -> Iterator[Problem]:
    """The global batch splits over devices, processes and accumulation steps; warmup ends
    within the run."""
    config, n = ctx.config, ctx.num_devices
    b, k = config.batch_size, config.accum_steps
    if k < 1:
        yield Problem("accum_steps", f"must be >= 1, got {k}.")
    elif b <= 0:
        yield Problem("batch_size", f"must be positive, got {b}.")
    elif n is not None and b % n:
        good = max(n, b // n * n)
        yield Problem(
            "batch_size",
            f"{b} is not divisible by the {n} devices; use a multiple of {n}, e.g. {good}.",
        )
    elif n is not None and b % (n * k):
        yield Problem(
            "batch_size",
            f"{b} does not split into accum_steps={k} micro-batches over {n} devices; use"
            f" a multiple of {n * k}, or an accum_steps that divides {b // n}.",
        )
    elif b % k:
        yield Problem("accum_steps", f"{k} does not divide batch_size={b}.")
    elif ctx.num_processes is not None and b % ctx.num_processes:
        yield Problem("batch_size", f"{b} is not divisible by {ctx.num_processes} processes.")
    if 0 < config.total_steps < config.schedule.warmup_steps:
        yield Problem(
            "schedule.warmup_steps",
            f"{config.schedule.warmup_steps} exceeds total_steps={config.total_steps}.",
        )


@register
def mesh(ctx: Context) -> Iterator[Problem]:
    """Mesh axis sizes that use the devices, and sharding rules over known axes."""
    from mmjax.parallel import mesh as mesh_lib

    sizes = {a: ctx.config.mesh[a] for a in mesh_lib.AXES}
    bad = {a: v for a, v in sizes.items() if isinstance(v, bool) or not isinstance(v, int)}
    bad |= {a: v for a, v in sizes.items() if a not in bad and v < 1 and v != -1}
    for axis, value in bad.items():
        yield Problem(
            f"mesh.{axis}", f"must be a positive int or -1 (the devices left), got {value!r}."
        )
    if ctx.num_devices is not None and not bad:
        try:
            mesh_lib.mesh_shape(ctx.config.mesh, ctx.num_devices)
        except ValueError as e:
            yield Problem("mesh", error_text(e).removeprefix("config.mesh "))
    for i, rule in enumerate(ctx.config.mesh.rules):
        if not (isinstance(rule, tuple | list) and len(rule) == 2):
            yield Problem(f"mesh.rules[{i}]", f"{rule!r} is not a (logical name, mesh axes) pair.")
            continue
        axes = rule[1] if isinstance(rule[1], tuple | list) else (rule[1],)
        bad = [a for a in axes if a is not None and a not in mesh_lib.AXES]
        if bad:
            yield Problem(
                f"mesh.rules[{i}]", f"{rule[0]!r} -> {bad}: mesh axes are {mesh_lib.AXES}."
            )


DTYPES = ("float32", "bfloat16", "float16")


def dtype_problem(field: str, name: str, allow_empty: bool) -> Problem | None:
    if (allow_empty and name == "") or name in DTYPES:
        return None
    return Problem(field, unknown_name("activation dtype", name, DTYPES))


def remat_problem(field: str, name: str, allow_empty: bool) -> Problem | None:
    from mmjax.models import layers

    if allow_empty and name == "":
        return None
    try:
        layers.remat_policy(name)
    except ValueError as e:
        return Problem(field, error_text(e))
    return None
