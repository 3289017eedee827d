"""The check registry: a check yields a `Problem` per thing wrong; `check` runs them all."""

import dataclasses
from collections.abc import Callable, Iterable

import ml_collections

from mmjax.config import ConfigError, Problem
from mmjax.errors import UserError


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


def error_text(error: BaseException) -> str:
    text = str(error).strip().strip("'\"")
    return text if isinstance(error, ValueError | UserError) else f"{type(error).__name__}: {text}"
