"""The next batches on the devices while the current step runs.

`DevicePrefetch` pulls host batches from the data iterator and makes them global device
arrays in a background thread, `depth` batches ahead, so neither the batching and
refilling of `stages.TrainIterator` nor the host-to-device copy sits on the training
thread. It is a Grain iterator whose state is that of the last batch the loop *took*
(not of the ones in flight), so a checkpoint resumes exactly where training stood, and
its skip counts are those of that batch too. `wait_s` is how long the last `next` waited:
the loop's data-wait time per step.
"""

import copy
import queue
import threading
import time
from collections.abc import Callable
from typing import Any

import grain


class _Failed:
    def __init__(self, error: BaseException):
        self.error = error


class DevicePrefetch(grain.DatasetIterator):
    """`to_device(next(source))` computed `depth` batches ahead in a thread."""

    def __init__(self, source: grain.DatasetIterator, to_device: Callable, depth: int = 2):
        super().__init__()
        self.source, self._to_device, self._depth = source, to_device, max(depth, 1)
        self._state = source.get_state()
        self.wait_s = 0.0
        self._start()

    def _start(self) -> None:
        self._queue: queue.Queue = queue.Queue(maxsize=self._depth)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._fill, name="mmjax-prefetch", daemon=True)
        self._thread.start()

    def _put(self, item: tuple) -> bool:
        while not self._stop.is_set():
            try:
                self._queue.put(item, timeout=0.05)
                return True
            except queue.Full:
                continue
        return False

    def _fill(self) -> None:
        while not self._stop.is_set():
            try:
                host = next(self.source)
                item = (self._to_device(host), self.source.get_state())
            except BaseException as e:  # StopIteration and errors reach the consumer
                self._put((_Failed(e), None))
                return
            if not self._put(item):
                return

    def _halt(self) -> None:
        self._stop.set()
        while self._thread.is_alive():
            try:
                self._queue.get_nowait()
            except queue.Empty:
                self._thread.join(0.05)

    def __next__(self) -> Any:
        start = time.perf_counter()
        batch, state = self._queue.get()
        self.wait_s = time.perf_counter() - start
        if isinstance(batch, _Failed):
            self._put((batch, None))  # every later call fails the same way
            raise batch.error
        self._state = state
        return batch

    def get_state(self) -> dict[str, Any]:
        return copy.deepcopy(self._state)

    def set_state(self, state: dict[str, Any]) -> None:
        self._halt()
        self.source.set_state(state)
        self._state = copy.deepcopy(state)
        self._start()

    @property
    def reasons(self) -> tuple[str, ...]:
        return getattr(self.source, "reasons", ())

    @property
    def skipped(self) -> dict[str, int]:
        """Records skipped up to the last batch taken (`TrainIterator` keeps them in its
        state), by reason."""
        return dict(self._state.get("skipped", {})) if isinstance(self._state, dict) else {}

    def close(self) -> None:
        if not self._closed:
            self._halt()
            super().close()


def prefetch(source: grain.DatasetIterator, to_device: Callable, depth: int):
    """A `DevicePrefetch` of `depth` batches, or, for depth 0, the same on the caller's
    thread (no batch in flight)."""
    return DevicePrefetch(source, to_device, depth) if depth > 0 else Synchronous(source, to_device)


class Synchronous(DevicePrefetch):
    """`DevicePrefetch`'s interface without a thread."""

    def _start(self) -> None:
        pass

    def _halt(self) -> None:
        pass

    def __next__(self) -> Any:
        start = time.perf_counter()
        batch = self._to_device(next(self.source))
        self.wait_s = time.perf_counter() - start
        self._state = self.source.get_state()
        return batch


class PrefetchedStep:
    """The loop's one-jit step: `runner(state) -> (state, metrics)` on the next batch of
    `data` (a `DevicePrefetch`), which is what checkpoints save; `wait_s` is the time the
    step waited for its batch."""

    def __init__(self, compiled: Callable, data: DevicePrefetch):
        self.compiled, self.data = compiled, data
        self.wait_s = 0.0

    def __call__(self, state):
        batch = next(self.data)
        self.wait_s = self.data.wait_s
        return self.compiled(state, batch)
