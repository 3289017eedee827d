r"""The config of a command line: `--config=PATH[:ARG]` and `--config.x.y=VALUE` overrides.

    python -m mmjax.main --config=configs/demo.py:steps=500 --config.optim.lr=1e-3

Parsed here rather than by absl's flag machinery, so that every mistake ends in one line
that names the flag, the value and what to do: an unknown field with the nearest known
ones, a value that is not of the field's type, a config file that is missing or fails, a
config arg of the wrong type. A value is parsed as the type of the field it replaces:
int, float, bool (true/false, 1/0, yes/no), str, a tuple (`"(0.9, 1.0)"` or `0.9,1.0`),
a dict literal for a whole entry (`--config.evals.knn="{'type': 'knn', 'every': 0}"`),
and `None` where the field allows it. `--config.x VALUE` works too, and a bare
`--config.flag` sets a bool.
"""

import ast
import dataclasses
import difflib
import importlib.util
import pathlib
import traceback
from collections.abc import Sequence
from typing import Any

import ml_collections

from mmjax.errors import UsageError, UserError, suggest

_TRUE, _FALSE = ("true", "1", "yes", "y"), ("false", "0", "no", "n")


class ConfigFlagError(UserError, ValueError):
    """A `--config` flag that cannot be applied."""


@dataclasses.dataclass(frozen=True)
class Override:
    """One `--config.path=value` (value None: a bare `--config.path`)."""

    path: str
    value: str | None
    flag: str  # as the user wrote it, for messages


def split_argv(argv: Sequence[str], name: str = "config") -> tuple[str | None, list, list]:
    """(the `--config` value, the `--config.*` overrides in order, every other argument)."""
    config_flag, overrides, rest = None, [], []
    args, i = list(argv), 0
    while i < len(args):
        arg = args[i]
        head, eq, value = arg.partition("=")
        dashes = len(head) - len(head.lstrip("-"))
        bare = head[dashes:]
        if dashes in (1, 2) and bare == name:
            if not eq:
                if i + 1 >= len(args):
                    raise UsageError(f"--{name} needs a value: --{name}=configs/NAME.py[:ARG].")
                i, value = i + 1, args[i + 1]
            config_flag = value
        elif dashes in (1, 2) and bare.startswith(name + "."):
            path = bare[len(name) + 1 :]
            if not eq and i + 1 < len(args) and not args[i + 1].startswith("-"):
                i, value, eq = i + 1, args[i + 1], "="
            overrides.append(Override(path, value if eq else None, arg))
        else:
            rest.append(arg)
        i += 1
    return config_flag, overrides, rest


# ------------------------------------------------------------------ the config file


def _line_in(path: str, error: BaseException) -> str:
    """' (line N)' of the deepest frame of `error` in the file `path`, or ''."""
    target = pathlib.Path(path).resolve()
    lines = [f.lineno for f in traceback.extract_tb(error.__traceback__) if _same(f, target)]
    return f" (line {lines[-1]})" if lines else ""


def _same(frame: traceback.FrameSummary, target: pathlib.Path) -> bool:
    try:
        return pathlib.Path(frame.filename).resolve() == target
    except OSError:
        return False


def load_module(path: str, function: str, what: str = "config file") -> Any:
    """The Python file `path`'s `function`, with a clean error when the file is missing,
    does not run, or lacks it."""
    file = pathlib.Path(path)
    if not file.is_file():
        near = ""
        if file.parent.is_dir():
            near = suggest(file.name, [p.name for p in file.parent.glob("*.py")])
        raise UsageError(f"{what} {path!r} does not exist.{near}")
    spec = importlib.util.spec_from_file_location(file.stem, file)
    module = importlib.util.module_from_spec(spec)
    try:
        spec.loader.exec_module(module)
    except SyntaxError as e:
        raise UsageError(f"{what} {path} (line {e.lineno}): {e.msg}.") from None
    except Exception as e:
        raise UsageError(
            f"{what} {path}{_line_in(path, e)} fails to import: {type(e).__name__}: {e}"
        ) from None
    if not hasattr(module, function):
        raise UsageError(f"{what} {path} has no {function}() function.")
    return getattr(module, function)


def load_file(config_flag: str) -> ml_collections.ConfigDict:
    """`configs/demo.py:steps=10` -> its `get_config("steps=10")`, with clean errors."""
    path, _, arg = config_flag.partition(":")
    get_config = load_module(path, "get_config")
    try:
        config = get_config(arg or None)
    except UserError as e:  # a bad config arg: parse_arg says which and why
        raise ConfigFlagError(f"--config={config_flag}: {e}") from None
    except Exception as e:
        where = f"{path}{_line_in(path, e)}"
        call = f"get_config({arg!r})" if arg else "get_config()"
        raise ConfigFlagError(
            f"--config={config_flag}: {call} in {where} failed: {type(e).__name__}: {e}"
        ) from None
    if not isinstance(config, ml_collections.ConfigDict):
        raise ConfigFlagError(
            f"--config={config_flag}: get_config returned {type(config).__name__}, not a"
            " ConfigDict."
        )
    return config


# ------------------------------------------------------------------------ overrides


def flat_keys(config: ml_collections.ConfigDict, prefix: str = "") -> list[str]:
    """Every dotted field path, entries (sub-configs) included: "optim", "optim.lr", ..."""
    out = []
    for key, value in config.items():
        path = f"{prefix}{key}"
        out.append(path)
        if isinstance(value, ml_collections.ConfigDict):
            out += flat_keys(value, path + ".")
    return out


def _resolve(config: ml_collections.ConfigDict, o: Override):
    """(the ConfigDict holding the field, its key), or an error naming the nearest fields."""
    node, parts = config, o.path.split(".")
    for depth, part in enumerate(parts):
        if not isinstance(node, ml_collections.ConfigDict) or part not in node:
            here = ".".join(parts[:depth])
            if not isinstance(node, ml_collections.ConfigDict):
                raise ConfigFlagError(
                    f"{o.flag}: config.{here} is a {type(node).__name__}, not a group of fields."
                )
            where = f"config.{here}" if here else "the config"
            hint = _nearest_fields(config, node, here, part) or " Known: " + ", ".join(node)
            raise ConfigFlagError(f"{o.flag}: {where} has no field {part!r}.{hint}")
        if depth < len(parts) - 1:
            node = node[part]
    return node, parts[-1]


def _nearest_fields(
    config: ml_collections.ConfigDict, node: ml_collections.ConfigDict, here: str, part: str
) -> str:
    """' Did you mean ...?': the closest fields beside the unknown one, else fields
    anywhere whose own name is close (`--config.lr` -> optim.lr)."""
    prefix = f"{here}." if here else ""
    siblings = difflib.get_close_matches(part, list(node), n=3, cutoff=0.6)
    close = [prefix + s for s in siblings]
    if not close:
        scored = [
            (difflib.SequenceMatcher(None, part, key.rsplit(".", 1)[-1]).ratio(), key)
            for key in flat_keys(config)
        ]
        close = [k for r, k in sorted(scored, key=lambda x: -x[0]) if r >= 0.75][:3]
    return (" Did you mean " + " or ".join(close) + "?") if close else ""


def _nullable(node: ml_collections.ConfigDict, key: str) -> bool:
    """A field that may be None: it is None now, or was declared as a typed reference."""
    field = getattr(node, "_fields", {}).get(key)
    return node[key] is None or isinstance(field, ml_collections.FieldReference)


def _literal(text: str) -> Any:
    try:
        return ast.literal_eval(text)
    except (ValueError, SyntaxError):
        return text


def parse_value(node: ml_collections.ConfigDict, key: str, o: Override) -> Any:
    """`o.value` as the type of the field it replaces; an error saying the type otherwise."""
    kind = node.get_type(key)
    text = o.value
    if text is None:
        if kind is bool:
            return True
        raise ConfigFlagError(f"{o.flag}: needs a value ({o.flag}=...).")
    if text.strip().lower() in ("none", "null") and kind is not str and _nullable(node, key):
        return None
    try:
        if kind is bool:
            lowered = text.strip().lower()
            if lowered not in _TRUE + _FALSE:
                raise ValueError
            return lowered in _TRUE
        if kind is int:
            return int(text)
        if kind is float:
            return float(text)
        if kind is str:
            return text
        if kind is tuple:
            value = _literal(text)
            if isinstance(value, str) and "," in value:
                value = tuple(_literal(v.strip()) for v in value.split(","))
            return tuple(value) if isinstance(value, list | tuple) else (value,)
        if isinstance(kind, type) and issubclass(kind, ml_collections.ConfigDict):
            value = ast.literal_eval(text)
            if not isinstance(value, dict):
                raise ValueError
            return ml_collections.ConfigDict(value)
    except (ValueError, SyntaxError):
        names = {bool: "true or false", int: "an integer", float: "a number", tuple: "a tuple"}
        wanted = names.get(kind, "a dict literal {'field': value}")
        current = node[key]
        raise ConfigFlagError(
            f"{o.flag}: config.{o.path} takes {wanted} (it is {current!r}), not {text!r}."
        ) from None
    return _literal(text)  # a field without a type (None by default): any literal


def apply_overrides(config: ml_collections.ConfigDict, overrides: Sequence[Override]) -> None:
    """Sets every override in order; fails on the first that cannot be set."""
    for o in overrides:
        node, key = _resolve(config, o)
        value = parse_value(node, key, o)
        try:
            node[key] = value
        except (TypeError, ValueError) as e:
            raise ConfigFlagError(f"{o.flag}: cannot set config.{o.path}: {e}") from None


def config_from_argv(
    argv: Sequence[str], required: bool = True
) -> tuple[ml_collections.ConfigDict | None, str | None, list[str]]:
    """(config with its overrides, the `--config` value, the arguments left for absl)."""
    config_flag, overrides, rest = split_argv(argv)
    if config_flag is None:
        if required:
            raise UsageError("--config is required, e.g. --config=configs/demo.py.")
        if overrides:
            raise UsageError(f"{overrides[0].flag} needs --config=... too.")
        return None, None, rest
    config = load_file(config_flag)
    apply_overrides(config, overrides)
    return config, config_flag, rest


def parse_tool_argv(argv: Sequence[str]) -> tuple[ml_collections.ConfigDict | None, list[str]]:
    """For a tool on absl flags that may take a run's config: (`--config` with its
    overrides or None, what absl leaves: the program name and positional arguments).
    A mistake in either is a UsageError naming the flag."""
    from absl import flags

    config, _, rest = config_from_argv(argv[1:], required=False)
    flags.FLAGS.unparse_flags()  # a second parse in one process starts from the defaults
    try:
        return config, flags.FLAGS([argv[0], *rest])
    except flags.Error as e:
        raise UsageError(str(e)) from None
