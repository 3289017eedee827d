"""The error boundary of every command: what the user gave fails cleanly, bugs show theirs.

A failure caused by what the user gave (a config field or argument, a path, the data, a
checkpoint, the environment) raises a `UserError` whose message names the input, the bad
value and what to do; `boundary` prints it as one or two lines, without a traceback, and
ends the process with status 1. An error from the operating system or storage (a
permission, a full disk, a bucket that does not answer: an `OSError` with an errno) is
printed the same way. Anything else is a bug in mmjax: its traceback is printed, with a
line that says so.

Nothing here imports JAX or the rest of mmjax, so every module (data, models, tools) can
raise a `UserError`.
"""

import contextlib
import difflib
import errno as errno_lib
import logging
import sys
import traceback
from collections.abc import Callable, Iterable, Iterator
from typing import Any

EXIT_USER_ERROR = 1
EXIT_BUG = 1
EXIT_INTERRUPTED = 130
BUG_LINE = (
    "This is a bug in mmjax, not a problem with your input: please report it with the"
    " traceback above."
)


class UserError(Exception):
    """A failure caused by an input of the user's; the message says which and what to do.

    Subclasses keep their library base too (`ConfigError(UserError, ValueError)`), so code
    that catches the library type still does.
    """


class UsageError(UserError):
    """A command line that cannot be run as given (a missing or malformed flag)."""


class DataError(UserError, RuntimeError):
    """The data cannot feed the run (no readable shard, no usable record)."""


class MissingPackageError(UserError, ImportError):
    """An optional package that the configured input needs is not installed."""


def suggest(name: str, known: Iterable[str], n: int = 3) -> str:
    """' Did you mean 'a' or 'b'?' for the known names closest to `name`; '' if none is."""
    known = list(known)
    containing = [k for k in known if len(name) >= 3 and name in k and k != name]
    close = containing[:n] or difflib.get_close_matches(name, known, n=n, cutoff=0.6)
    if not close:
        tail = name.rsplit(".", 1)[-1]  # a misspelt leaf: compare the last parts only
        by_tail = {k.rsplit(".", 1)[-1]: k for k in known}
        close = [by_tail[t] for t in difflib.get_close_matches(tail, list(by_tail), n=n)]
    if not close:
        return ""
    return " Did you mean " + " or ".join(repr(c) for c in close) + "?"


def known_list(names: Iterable[str], limit: int = 30) -> str:
    """'a, b, c' (the first `limit`, then how many more)."""
    names = sorted(names)
    shown = ", ".join(names[:limit])
    return shown + (f", ... ({len(names) - limit} more)" if len(names) > limit else "")


def unknown_name(kind: str, name: Any, known: Iterable[str]) -> str:
    """ "unknown loss 'nope'; known: a, b. Did you mean ...?" """
    known = list(known)
    return f"unknown {kind} {name!r}; known: {known_list(known)}.{suggest(str(name), known)}"


def environment_message(error: OSError) -> str:
    """'Permission denied: /x/y (errno EACCES)' for an error of the operating system."""
    where = f": {error.filename}" if error.filename else ""
    if error.filename2:
        where += f" -> {error.filename2}"
    code = errno_lib.errorcode.get(error.errno, str(error.errno))
    return f"{error.strerror or error}{where} ({code})."


def is_environment_error(error: BaseException) -> bool:
    """An error of the operating system or storage with an errno: about a path the user
    gave, or the machine (permissions, space, network), not about mmjax's code."""
    return isinstance(error, OSError) and error.errno is not None


def raised_in(error: BaseException, *parts: str) -> bool:
    """Whether `error` was raised (its innermost frame) in a file whose path has all of
    `parts`: a refusal written in that module, as opposed to one from deeper down."""
    frames = traceback.extract_tb(error.__traceback__)
    return bool(frames) and all(part in frames[-1].filename for part in parts)


@contextlib.contextmanager
def refusals(what: str, *parts: str) -> Iterator[None]:
    """Makes a ValueError, FileExistsError or FileNotFoundError raised in a module whose
    path has all of `parts` a UserError prefixed by `what`: the refusals a library module
    writes for its caller (weights that do not fit, a workdir already in use), as opposed
    to the same types raised from deeper down, which stay bugs."""
    try:
        yield
    except (ValueError, FileExistsError, FileNotFoundError) as e:
        if isinstance(e, UserError) or not raised_in(e, *parts):
            raise
        raise UserError(f"{what}: {e}") from e


def message(error: BaseException) -> str | None:
    """The clean message of a failure the user can fix; None for a bug."""
    if isinstance(error, UserError):
        return str(error)
    if is_environment_error(error):
        return environment_message(error)
    return None


def report(text: str, prefix: str = "Error") -> None:
    """Prints `text` to stderr, after flushing the log so that it comes last."""
    for handler in logging.getLogger().handlers:
        handler.flush()
    sys.stdout.flush()
    print(f"{prefix}: {text}", file=sys.stderr, flush=True)


def _default_exit(status: int) -> None:
    sys.exit(status)


@contextlib.contextmanager
def boundary(
    exit_with: Callable[[int], None] = _default_exit, reported: tuple[type, ...] = ()
) -> Iterator[None]:
    """Ends the process on any failure in the body: a user's one with its message and
    status 1, a bug with its traceback and a line saying it is one.

    `exit_with(status)` ends the process (multi-process runs pass one that does not wait
    for the other processes). `reported`: other exception types whose message is all
    there is to say (another process's failure, already explained there). `SystemExit`
    passes through untouched.
    """
    try:
        yield
    except SystemExit:
        raise
    except KeyboardInterrupt:
        report("interrupted.", prefix="Stopped")
        exit_with(EXIT_INTERRUPTED)
    except BaseException as error:
        text = str(error) if isinstance(error, reported) else message(error)
        if text is not None:
            report(text)
            exit_with(EXIT_USER_ERROR)
        else:
            traceback.print_exc()
            report(BUG_LINE, prefix="Internal error")
            exit_with(EXIT_BUG)


def run(main: Callable[[], Any]) -> None:
    """`main()` inside the boundary: the entry point of a tool (`errors.run(main)`)."""
    with boundary():
        main()
