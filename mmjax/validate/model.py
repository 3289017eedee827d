"""Towers: their types against the registry, their fields against the type's defaults,
their sizes, and (deep) each one traced on an example of its data."""

from collections.abc import Iterator

import ml_collections

from mmjax.config import Problem
from mmjax.errors import unknown_name
from mmjax.validate.core import Context, error_text, register, register_deep
from mmjax.validate.ranges import dtype_problem, remat_problem


def tower_types(config: ml_collections.ConfigDict) -> dict[str, str]:
    """{modality: the tower config that builds it}, following `share`."""
    towers = config.model.towers
    return {m: (c.share or m) for m, c in towers.items()}


def field_problems(
    kind: str, name: str, entry: ml_collections.ConfigDict, defaults: dict
) -> list[str]:
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
        dtype_problem("model.dtype", model.dtype, False),
        remat_problem("model.remat", model.remat, False),
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
        messages = field_problems("tower type", c.type, c, TOWERS.get(c.type).defaults)
        if messages:
            found += [Problem(field, m) for m in messages]
            continue
        own = [
            dtype_problem(f"{field}.dtype", c.dtype, True),
            remat_problem(f"{field}.remat", c.remat, True),
            *_size_problems(field, c, TOWERS.get(c.type).defaults),
        ]
        if any(own):
            found += [p for p in own if p]
            continue
        try:
            out[name] = TOWERS.get(c.type).build(c, model)
        except (ValueError, TypeError, KeyError, AttributeError) as e:
            found.append(Problem(field, error_text(e)))
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
                f" ({jax.numpy.dtype(dtype).name} {list(shape)}): {error_text(e)}",
            )
