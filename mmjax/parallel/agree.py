"""Decisions all processes share, and failures that stop all of them.

Which step to restore, whether the data state restores, when config.json is written:
each process looks for itself, then they agree through JAX's coordination service (the
key-value store and barriers that `jax.distributed.initialize` starts), never through
an XLA collective. That keeps agreement independent of gloo's fixed 30 s context
set-up (a barrier here waits as long as it is told) and lets a wait notice that another
process has failed, instead of hanging.

A process that fails publishes its message (`report_failure`). The others see it in any
agreement they wait in, and `FailureWatch`, a thread, stops a process stuck in a
collective with that message after a grace period. In a one-process run everything
here is a no-op.
"""

from __future__ import annotations

import collections
import contextlib
import json
import logging
import os
import sys
import threading
import time
from typing import Any

import jax

PREFIX = "mmjax"
FAILED = f"{PREFIX}/failed"
SEEN = f"{PREFIX}/seen"  # SEEN/<failed process>/<process that read its message>
DEFAULT_TIMEOUT_S = 600.0
POLL_S = 1.0
ACK_TIMEOUT_S = 10.0  # a failed process waits this long for the others to read why

_calls: collections.Counter[str] = collections.Counter()


class ProcessFailedError(RuntimeError):
    """Another process failed, or did not answer in time; the message says which."""


def _client() -> Any:
    from jax._src import distributed  # the client jax.distributed.initialize made

    return distributed.global_state.client


def _unique(name: str) -> str:
    """Every process calls the same agreements in the same order: same keys."""
    _calls[name] += 1
    return f"{PREFIX}/{name}/{_calls[name]}"


def failures() -> dict[int, str]:
    """{process: message} of the processes that reported a failure."""
    if jax.process_count() == 1:
        return {}
    entries = _client().key_value_dir_get(FAILED + "/")
    return {int(k.rsplit("/", 1)[-1]): v for k, v in entries}


def _raise_if_another_failed() -> None:
    others = {p: m for p, m in failures().items() if p != jax.process_index()}
    if others:
        p, message = min(others.items())
        raise ProcessFailedError(f"Process {p} failed: {message}")


def _wait_for(key: str, what: str, timeout_s: float) -> str:
    """The value at `key`, polling so that a failure elsewhere ends the wait."""
    client = _client()
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            return client.blocking_key_value_get(key, int(POLL_S * 1000))
        except Exception:  # not there yet: DEADLINE_EXCEEDED
            _raise_if_another_failed()
            if time.monotonic() > deadline:
                raise ProcessFailedError(
                    f"No answer from {what} within {timeout_s:.0f} s."
                ) from None


def allgather(name: str, value: Any, timeout_s: float = DEFAULT_TIMEOUT_S) -> list[Any]:
    """Every process's `value` (JSON-able), in process order."""
    if jax.process_count() == 1:
        return [value]
    key = _unique(name)
    _client().key_value_set(f"{key}/{jax.process_index()}", json.dumps(value))
    return [
        json.loads(_wait_for(f"{key}/{i}", f"process {i} ({name})", timeout_s))
        for i in range(jax.process_count())
    ]


def broadcast(name: str, value: Any, timeout_s: float = DEFAULT_TIMEOUT_S) -> Any:
    """Process 0's `value` (JSON-able) on every process; the others' `value` is unused."""
    if jax.process_count() == 1:
        return value
    key = _unique(name)
    if jax.process_index() == 0:
        _client().key_value_set(key, json.dumps(value))
        return value
    return json.loads(_wait_for(key, f"process 0 ({name})", timeout_s))


def barrier(name: str, timeout_s: float = DEFAULT_TIMEOUT_S) -> None:
    """Waits until every process reaches the barrier `name`, or one of them fails."""
    allgather(name, True, timeout_s)


def report_failure(error: BaseException) -> None:
    """Tells the other processes that this one failed, and why; waits (briefly) until
    they have read it, since this process may host the coordination service."""
    if jax.process_count() == 1:
        return
    me, client = jax.process_index(), _client()
    message = f"{type(error).__name__}: {error}"[:2000]
    try:
        client.key_value_set(f"{FAILED}/{me}", message, allow_overwrite=True)
        deadline = time.monotonic() + ACK_TIMEOUT_S
        while time.monotonic() < deadline:
            seen = {int(k.rsplit("/", 1)[-1]) for k, _ in client.key_value_dir_get(f"{SEEN}/{me}/")}
            if seen | set(failures()) >= set(range(jax.process_count())) - {me}:
                return
            time.sleep(0.2)
    except Exception as e:  # the coordination service itself is gone: nobody to tell
        logging.warning("Could not report the failure to the other processes: %s", e)


def exit_now(status: int) -> None:
    """Exits with `status`. In a multi-process run without JAX's shutdown barrier: after
    a failure, the other processes may never reach it (stuck in a collective, or
    stopped), and waiting there would hang this one."""
    for handler in logging.getLogger().handlers:
        handler.flush()
    sys.stdout.flush()
    sys.stderr.flush()
    if jax.process_count() > 1:
        os._exit(status)
    sys.exit(status)


class FailureWatch:
    """Stops this process when another reports a failure, after `grace_s` seconds.

    A process that fails cleanly (the same config error everywhere) exits on its own
    within the grace period; one that hangs in a collective that the failed process
    will never join is stopped with exit status 1 and the other's message, instead of
    waiting for a heartbeat timeout or forever. On a failure in the `with` body, this
    process reports it first.
    """

    def __init__(self, grace_s: float = 10.0, ignore: tuple[type[BaseException], ...] = ()):
        self.grace_s = grace_s
        self.ignore = ignore
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def __enter__(self) -> FailureWatch:
        if jax.process_count() > 1:
            self._thread = threading.Thread(target=self._watch, daemon=True, name="FailureWatch")
            self._thread.start()
        return self

    def __exit__(self, kind, error, traceback) -> None:
        if error is not None and not isinstance(error, (*self.ignore, SystemExit)):
            report_failure(error)
        self._stop.set()

    def _watch(self) -> None:
        me = jax.process_index()
        while not self._stop.wait(POLL_S):
            try:
                others = {p: m for p, m in failures().items() if p != me}
            except Exception:  # coordination service gone: the process is ending anyway
                return
            if others:
                p, message = min(others.items())
                logging.error("Process %d failed: %s", p, message)
                with contextlib.suppress(Exception):  # its coordination service may be gone
                    _client().key_value_set(f"{SEEN}/{p}/{me}", "1", allow_overwrite=True)
                if not self._stop.wait(self.grace_s):
                    logging.error(
                        "Stopping process %d too: it would wait for process %d forever.", me, p
                    )
                    exit_now(1)
                return
