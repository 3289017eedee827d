"""Everything about a run's config that can be checked before anything is built.

`check(config, num_devices, num_processes)` runs every registered check and raises one
`ConfigError` listing every problem found, each naming its field, the bad value and what
to do: unknown registry names (with the known ones), fields a tower or modality type
does not have, impossible combinations (an objective over a modality no tower provides,
a batch that does not split, a tower whose data has the wrong rank), values out of range,
and data paths that match nothing or cannot be read.

The checks lean on the registries, so a tower, loss, modality, source, evaluator or
schedule added later is checked without an edit here: its name against its registry,
its fields against its registered defaults, its construction by building it (building a
tower or a reader is cheap: nothing is traced or compiled). A new kind of input adds one
function with `@register`.
"""

import dataclasses
import inspect
import math
from collections.abc import Callable, Iterable, Iterator

import jax.numpy as jnp
import ml_collections

from mmjax.config import ConfigError, Problem
from mmjax.errors import UserError, known_list, suggest, unknown_name


@dataclasses.dataclass(frozen=True)
class Context:
    """What a check may consult. The device and process counts are None before the
    runtime has started; checks that need them are skipped then."""

    config: ml_collections.ConfigDict
    num_devices: int | None = None
    num_processes: int | None = None


Check = Callable[[Context], Iterable[Problem]]
CHECKS: list[Check] = []
DEEP_CHECKS: list[Check] = []  # slower (they trace): only once every check above passes


def register(check: Check) -> Check:
    """Adds a check; it yields a `Problem` for each thing wrong."""
    CHECKS.append(check)
    return check


def register_deep(check: Check) -> Check:
    """Adds a check that runs once every `register`ed one has passed."""
    DEEP_CHECKS.append(check)
    return check


def problems(
    config: ml_collections.ConfigDict,
    num_devices: int | None = None,
    num_processes: int | None = None,
    deep: bool = False,
) -> list[Problem]:
    """Every problem of `config`, from every check, in registration order; with `deep`,
    also those of the deep checks when no other was found.

    A check that raises once another has found a problem is taken to have tripped over
    that problem (a tower of an unknown type has no stem to compare): it is left out.
    Raising with no problem found is a bug, and propagates.
    """
    context = Context(config, num_devices, num_processes)
    found: list[Problem] = []
    for check in CHECKS:
        try:
            found += list(check(context))
        except Exception:
            if not found:
                raise
    if deep and not found:
        for check in DEEP_CHECKS:
            found += list(check(context))
    return list(dict.fromkeys(found))


def format_problems(found: list[Problem]) -> str:
    if len(found) == 1:
        return f"Invalid config: {found[0]}"
    return f"Invalid config ({len(found)} problems):\n  " + "\n  ".join(map(str, found))


def check(
    config: ml_collections.ConfigDict,
    num_devices: int | None = None,
    num_processes: int | None = None,
    deep: bool = False,
) -> None:
    """Raises `ConfigError` listing every problem of `config`; returns if there is none.

    `deep`: also trace each tower on its data's example shapes (a second or two; what the
    command line does before building anything)."""
    found = problems(config, num_devices, num_processes, deep)
    if found:
        raise ConfigError(format_problems(found))


def _error_text(error: BaseException) -> str:
    text = str(error).strip().strip("'\"")
    return text if isinstance(error, ValueError | UserError) else f"{type(error).__name__}: {text}"


# ------------------------------------------------------------------------ ranges

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
            yield Problem("mesh", _error_text(e).removeprefix("config.mesh "))
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


def _dtype_problem(field: str, name: str, allow_empty: bool) -> Problem | None:
    if (allow_empty and name == "") or name in DTYPES:
        return None
    return Problem(field, unknown_name("activation dtype", name, DTYPES))


def _remat_problem(field: str, name: str, allow_empty: bool) -> Problem | None:
    from mmjax.models import layers

    if allow_empty and name == "":
        return None
    try:
        layers.remat_policy(name)
    except ValueError as e:
        return Problem(field, _error_text(e))
    return None


# ------------------------------------------------------------------------ the model


def tower_types(config: ml_collections.ConfigDict) -> dict[str, str]:
    """{modality: the tower config that builds it}, following `share`."""
    towers = config.model.towers
    return {m: (c.share or m) for m, c in towers.items()}


def _fields(kind: str, name: str, entry: ml_collections.ConfigDict, defaults: dict) -> list[str]:
    """Messages for fields an entry lacks or does not know (a `type` changed by override)."""
    out = []
    unknown = sorted(set(entry) - set(defaults))
    missing = sorted(set(defaults) - set(entry))
    if unknown:
        out.append(f"fields {unknown} are not fields of {kind} {name!r}.")
    if missing:
        out.append(
            f"{kind} {name!r} needs fields {missing} that this entry lacks: build the entry"
            f" for that type in the config file, not by changing its type on the command line."
        )
    return out


def _size_problems(field: str, entry: ml_collections.ConfigDict, defaults: dict) -> list:
    """Integer fields of a tower: never negative, and positive where the registered
    default is (a size such as context_length or n_mels; a default of 0 means "from the
    variant" or "none", so 0 stays allowed there)."""
    out = []
    for key, default in defaults.items():
        if isinstance(default, bool) or not isinstance(default, int):
            continue
        value = entry[key]
        if isinstance(value, bool) or not isinstance(value, int):
            continue
        if value < 0 or (default > 0 and value == 0):
            wanted = "positive" if default > 0 else ">= 0 (0: the variant's or none)"
            out.append(Problem(f"{field}.{key}", f"must be {wanted}, got {value}."))
    return out


def built_towers(config: ml_collections.ConfigDict) -> tuple[dict, list[Problem]]:
    """({modality: tower factory} of the towers that build, problems of those that do not)."""
    from mmjax.models import OBJECTIVES_KEY, TOWERS, layers

    model, out, found = config.model, {}, []
    act = model.act
    if act not in layers.ACTIVATIONS:
        found.append(Problem("model.act", unknown_name("activation", act, layers.ACTIVATIONS)))
    for p in (
        _dtype_problem("model.dtype", model.dtype, False),
        _remat_problem("model.remat", model.remat, False),
    ):
        if p:
            found.append(p)
    if found:  # every tower inherits these: building them would only repeat the problem
        return out, found
    for name, c in model.towers.items():
        field = f"model.towers.{name}"
        if name == OBJECTIVES_KEY:
            found.append(Problem(field, f"{OBJECTIVES_KEY!r} is reserved: rename the modality."))
            continue
        if not isinstance(c, ml_collections.ConfigDict) or "type" not in c:
            found.append(Problem(field, "is not a tower entry: use mmconfig.tower(type, ...)."))
            continue
        if c.share:
            if c.share not in model.towers or c.share == name:
                found.append(
                    Problem(f"{field}.share", unknown_name("tower", c.share, model.towers))
                )
            elif model.towers[c.share].share:
                found.append(
                    Problem(f"{field}.share", f"{c.share!r} shares a tower itself: name its owner.")
                )
            continue
        if c.type not in TOWERS:
            found.append(
                Problem(f"{field}.type", unknown_name("tower type", c.type, TOWERS.names()))
            )
            continue
        messages = _fields("tower type", c.type, c, TOWERS.get(c.type).defaults)
        if messages:
            found += [Problem(field, m) for m in messages]
            continue
        own = [
            _dtype_problem(f"{field}.dtype", c.dtype, True),
            _remat_problem(f"{field}.remat", c.remat, True),
            *_size_problems(field, c, TOWERS.get(c.type).defaults),
        ]
        if any(own):
            found += [p for p in own if p]
            continue
        try:
            out[name] = TOWERS.get(c.type).build(c, model)
        except (ValueError, TypeError, KeyError, AttributeError) as e:
            found.append(Problem(field, _error_text(e)))
    return out, found


def example_rank(factory) -> int | None:
    """The rank of one example that a tower's stem takes ([H, W, 3]: 3), if it says."""
    stem = getattr(factory, "keywords", {}).get("stem")
    return getattr(stem, "example_rank", None)


@register
def model(ctx: Context) -> Iterator[Problem]:
    """Tower types, their fields and variants, dtypes and remat policies."""
    _, found = built_towers(ctx.config)
    yield from found


@register_deep
def traced(ctx: Context) -> Iterator[Problem]:
    """Each tower traced (shapes only: nothing is computed or compiled) on one example of
    its data: what only shows with shapes, such as an image size its patch does not
    divide, or token ids longer than its context."""
    import jax

    from mmjax.data.modalities import example_specs
    from mmjax.models import build_model

    config = ctx.config
    model_ = build_model(config.model, config.objectives)
    specs = example_specs(config)
    for m in config.model.towers:
        if m not in specs:
            continue
        shape, dtype = specs[m]
        inputs = {m: jax.ShapeDtypeStruct((1, *shape), dtype)}
        try:
            jax.eval_shape(model_.init, jax.random.key(0), inputs)
        except ValueError as e:
            yield Problem(
                f"model.towers.{m}",
                f"does not take the examples of config.data.modalities.{m}"
                f" ({jax.numpy.dtype(dtype).name} {list(shape)}): {_error_text(e)}",
            )


# ------------------------------------------------------------------------ the data


def built_readers(config: ml_collections.ConfigDict) -> tuple[dict, list[Problem]]:
    """({modality: reader} of the data modalities that build, problems of the others)."""
    from mmjax.data import modalities

    out, found = {}, []
    for name, c in config.data.modalities.items():
        field = f"data.modalities.{name}"
        if not isinstance(c, ml_collections.ConfigDict) or "type" not in c:
            found.append(Problem(field, "is not a modality entry: use mmconfig.modality(...)."))
            continue
        if c.type not in modalities.MODALITY_TYPES:
            known = modalities.MODALITY_TYPES.names()
            found.append(Problem(f"{field}.type", unknown_name("modality type", c.type, known)))
            continue
        kind = modalities.MODALITY_TYPES.get(c.type)
        messages = _fields("modality type", c.type, c, kind.defaults)
        if not modalities.keys_of(c.key):
            messages.append("key is empty: name the record field(s) to read, e.g. 'jpg;png'.")
        if messages:
            found += [Problem(field, m) for m in messages]
            continue
        try:
            out[name] = kind.build(name, c, config, True)
        except (ValueError, TypeError, KeyError, AttributeError, ImportError, OSError) as e:
            found.append(Problem(field, _error_text(e)))
    return out, found


@register
def data(ctx: Context) -> Iterator[Problem]:
    """Modality types, fields and readers (tokenizers included); the source and its files."""
    from mmjax.data import sources

    config = ctx.config
    readers, found = built_readers(config)
    yield from found
    if not config.data.modalities:
        yield Problem("data.modalities", "is empty: the batch would hold nothing.")
    name = config.data.source
    if name not in sources.SOURCES:
        yield Problem("data.source", unknown_name("data source", name, sources.SOURCES.names()))
        return
    for message in sources.check_source(config.data, ctx.num_processes):
        yield Problem("data.path", message)
    if name == "synthetic" or not config.data.path:
        try:  # the synthetic source makes what the modalities' keys name, at their sizes
            sources.synthetic_shapes(config.data)
        except ValueError as e:
            yield Problem("data.modalities", _error_text(e))
    # The towers read what the data holds: the same modalities, at their rank.
    towers, _ = built_towers(config)
    owner = tower_types(config)
    for m in config.model.towers:
        if m not in config.data.modalities:
            continue
        rank = example_rank(towers.get(owner[m]))
        reader = readers.get(m)
        if rank is not None and reader is not None and len(reader.shape) < rank:
            yield Problem(
                f"data.modalities.{m}",
                f"type {config.data.modalities[m].type!r} gives examples of shape"
                f" {list(reader.shape)}, but tower {m!r} ({config.model.towers[owner[m]].type})"
                f" takes examples of rank {rank}: make the data modality and the tower the"
                " same kind.",
            )


# ---------------------------------------------------------------------- objectives


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


# ------------------------------------------------- precision, groups, EMA, init


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
        yield Problem("schedule", _error_text(e))


# ---------------------------------------------------------------------- evaluators

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


# ------------------------------------------------------------------ multi-process


@register
def distributed(ctx: Context) -> Iterator[Problem]:
    """A coherent explicit multi-process set-up (checked before the runtime starts)."""
    d = ctx.config.distributed
    if d.cpu_collectives not in ("", "gloo", "mpi"):
        yield Problem(
            "distributed.cpu_collectives",
            unknown_name("CPU collectives", d.cpu_collectives, ("gloo", "mpi")),
        )
    if d.initialize and d.coordinator_address:
        if d.num_processes < 1:
            yield Problem("distributed.num_processes", f"must be >= 1, got {d.num_processes}.")
        elif not 0 <= d.process_id < d.num_processes:
            yield Problem(
                "distributed.process_id",
                f"must be in [0, {d.num_processes - 1}] (num_processes={d.num_processes}),"
                f" got {d.process_id}.",
            )
        if ":" not in d.coordinator_address:
            yield Problem(
                "distributed.coordinator_address",
                f"{d.coordinator_address!r} is not HOST:PORT.",
            )


def check_distributed(config: ml_collections.ConfigDict) -> None:
    """Only the multi-process fields: what must hold before the runtime starts."""
    found = list(distributed(Context(config)))
    if found:
        raise ConfigError(format_problems(found))


# ------------------------------------------------------------------------ workdir


class WorkdirError(UserError, OSError):
    """A workdir that cannot be used: missing (evaluation), or not writable."""


def check_workdir(workdir: str, create: bool = True) -> None:
    """The workdir (local or a bucket) exists, or is created when `create`, and takes a
    file: a probe written and removed by each process, so that an unwritable folder or
    an unreachable bucket fails now, not at the first checkpoint."""
    import os

    import jax

    from mmjax import storage

    try:
        if not storage.isdir(workdir):
            if not create:
                raise WorkdirError(
                    f"--workdir={workdir}: no such folder ({storage.absolute(workdir)}). Give"
                    " the workdir of a run, which holds its checkpoints/."
                )
            storage.makedirs(workdir)
        probe = storage.join(workdir, f".mmjax-probe-{jax.process_index()}-{os.getpid()}")
        storage.write_text(probe, "")
        storage.remove(probe)
    except WorkdirError:
        raise
    except Exception as e:
        raise WorkdirError(
            f"--workdir={workdir}: cannot write there ({type(e).__name__}: {str(e)[:300]})."
            " Use a folder (or bucket) this process can write to, or check its credentials."
        ) from e
