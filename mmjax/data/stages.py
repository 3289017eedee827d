"""Our own Grain stages: parallel map for streams, and full batches despite skips.

`ParallelMap` decodes a stream's elements in threads, in order, with an exact state
(the parent's state after the last element handed out). `collate` stacks a batch's good
examples and keeps its `Skipped` markers; `TrainIterator` tops batches up to the full
size from the next ones and counts the skips, and its state says where it stands:
the parent's state at the batch it is drawing from, how many good examples of that
batch it has handed out, and the skip counts so far. So a restored iterator yields
exactly the batches, and reports exactly the counts, of the uninterrupted run.
"""

import atexit
import collections
import copy
import logging
import queue
import threading
import weakref
from collections.abc import Callable, Iterator, Sequence
from concurrent import futures
from typing import Any

import grain
import numpy as np

from mmjax.data.skipped import Skipped
from mmjax.errors import DataError

_LOGGED_PER_REASON = 5  # the first few skips of each reason are logged with their key
_MAX_EMPTY_BATCHES = 1000  # batches in a row with no usable record: the data is all bad


class Batch(dict):
    """Stacked good examples, with the `Skipped` markers of the records that were not."""

    skipped: tuple[Skipped, ...] = ()


def rows(batch: dict) -> int:
    """The number of examples in a batch (0 for one with no good example)."""
    return len(next(iter(batch.values()))) if batch else 0


def collate(elements: Sequence[dict | Skipped]) -> Batch:
    good = [e for e in elements if not isinstance(e, Skipped)]
    batch = Batch({k: np.stack([e[k] for e in good]) for k in good[0]} if good else {})
    batch.skipped = tuple(e for e in elements if isinstance(e, Skipped))
    return batch


class ParallelMap(grain.IterDataset):
    """`fn(element, index)` over the parent in `num_threads` threads, or in `processes`
    worker processes when that is > 0, output in order.

    `index` counts the elements of the stream from its start (it is part of the state), so
    a function that draws its randomness from it is deterministic across resumes, and
    where it runs (thread or process) changes nothing in the output or the state.
    Processes sidestep the GIL (tokenising, Python glue) and hold their share of the
    cores when other jobs compete for them; `fn` is sent to each worker once.
    """

    def __init__(
        self,
        parent: grain.IterDataset,
        fn: Callable,
        num_threads: int,
        buffer: int,
        processes: int = 0,
    ):
        super().__init__(parent)
        self._fn, self._num_threads, self._processes = fn, num_threads, processes
        self._buffer = max(buffer, num_threads, 2 * processes)

    def __iter__(self) -> grain.DatasetIterator:
        pool = (
            _process_pool(self._fn, self._processes)
            if self._processes > 0
            else futures.ThreadPoolExecutor(self._num_threads, thread_name_prefix="mmjax-data")
        )
        fn = _call_in_worker if self._processes > 0 else self._fn
        return _ParallelMapIterator(self._parent.__iter__(), fn, pool, self._buffer)

    def __str__(self) -> str:
        return (
            f"ParallelMap(num_threads={self._num_threads}, processes={self._processes},"
            f" buffer={self._buffer})"
        )


_WORKER_FN: Callable | None = None


def _set_worker_fn(fn: Callable) -> None:
    global _WORKER_FN
    _WORKER_FN = fn


def _call_in_worker(element, index: int):
    return _WORKER_FN(element, index)


def _process_pool(fn: Callable, processes: int) -> futures.Executor:
    """Worker processes started fresh ("spawn": forking a process that runs JAX's threads
    can deadlock), each given `fn` once."""
    import multiprocessing

    return futures.ProcessPoolExecutor(
        processes,
        mp_context=multiprocessing.get_context("spawn"),
        initializer=_set_worker_fn,
        initargs=(fn,),
    )


class _ParallelMapIterator(grain.DatasetIterator):
    def __init__(self, parent, fn: Callable, pool: futures.Executor, buffer: int):
        super().__init__(parent)
        self._fn, self._buffer = fn, buffer
        self._pool = pool
        self._queue: collections.deque = collections.deque()  # (future, parent state after)
        self._state = parent.get_state()
        self._index = self._submitted = 0
        self._exhausted = False

    def __next__(self):
        while not self._exhausted and len(self._queue) < self._buffer:
            try:
                element = next(self._parent)
            except StopIteration:
                self._exhausted = True
                break
            future = self._pool.submit(self._fn, element, self._submitted)
            self._queue.append((future, self._parent.get_state()))
            self._submitted += 1
        if not self._queue:
            raise StopIteration
        future, self._state = self._queue.popleft()
        self._index += 1
        return future.result()

    def get_state(self) -> dict[str, Any]:
        return {"parent": copy.deepcopy(self._state), "index": self._index}

    def set_state(self, state: dict[str, Any]) -> None:
        for future, _ in self._queue:
            future.cancel()
        self._queue.clear()
        self._parent.set_state(state["parent"])
        self._state = copy.deepcopy(state["parent"])
        self._index = self._submitted = state["index"]
        self._exhausted = False

    def close(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)
        super().close()


def background(items: Iterator, depth: int = 2) -> Iterator:
    """`items` produced `depth` ahead in a thread (evaluation input: reading, batching and
    the copy to the devices overlap the previous batch's computation). Errors are raised
    in the consumer; closing the generator stops the thread."""
    if depth <= 0:
        yield from items
        return
    out: queue.Queue = queue.Queue(maxsize=depth)
    stop = threading.Event()
    done = object()

    def put(x) -> bool:
        while not stop.is_set():
            try:
                out.put(x, timeout=0.05)
                return True
            except queue.Full:
                continue
        return False

    def fill() -> None:
        try:
            for x in items:
                if not put((x, None)):
                    return
            put((done, None))
        except BaseException as e:
            put((done, e))

    thread = threading.Thread(target=fill, name="mmjax-background", daemon=True)
    thread.start()
    try:
        while True:
            x, error = out.get()
            if x is done:
                if error is not None:
                    raise error
                return
            yield x
    finally:
        stop.set()


def _take(batch: Batch, start: int, stop: int) -> dict[str, np.ndarray]:
    return {k: v[start:stop] for k, v in batch.items()}


class TrainIterator(grain.DatasetIterator):
    """Full batches of `size` good examples from batches that lack their skipped ones.

    `open_batches(step)` gives the underlying iterator of `Batch`es positioned for global
    step `step`: `seek` uses it to start over when a checkpoint holds no state for this
    process layout. Its state is the underlying state with "pending_offset" and
    "skipped" added, so a state without them (or one from a plain MapDataset iterator)
    still restores.
    """

    def __init__(
        self,
        open_batches: Callable[[int], grain.DatasetIterator],
        size: int,
        reasons: Sequence[str],
    ):
        """`reasons`: every skip reason the pipeline can give (counted from zero)."""
        super().__init__()
        self._open_batches, self._size, self.reasons = open_batches, size, tuple(reasons)
        self._batches = open_batches(0)
        self._reset({})
        # Stop reader threads before the interpreter tears modules down under them.
        ref = weakref.ref(self)
        atexit.register(lambda: (it := ref()) is not None and it.close())

    def _reset(self, counts: dict[str, int]) -> None:
        self._counts = {r: int(counts.get(r, 0)) for r in self.reasons}
        for r, n in counts.items():  # a reason this config no longer gives keeps its count
            self._counts.setdefault(r, int(n))
        self._counts_before = dict(self._counts)  # before the pending batch was read
        self._pending: Batch | None = None
        self._pending_state: Any = None
        self._offset = 0

    @property
    def skipped(self) -> dict[str, int]:
        """Records skipped so far in this process, by reason."""
        return dict(self._counts)

    def _pull(self) -> None:
        self._pending_state = self._batches.get_state()
        self._counts_before = dict(self._counts)
        self._pending = next(self._batches)
        self._offset = 0
        for s in self._pending.skipped:
            self._counts[s.reason] = self._counts.get(s.reason, 0) + 1
            if self._counts[s.reason] <= _LOGGED_PER_REASON:
                logging.warning(
                    "Skipping record %s: %s %s%s",
                    s.key or "?",
                    s.reason,
                    s.detail,
                    " (further ones are counted, not logged)"
                    if self._counts[s.reason] == _LOGGED_PER_REASON
                    else "",
                )

    def __next__(self) -> dict[str, np.ndarray]:
        parts = []
        need, empty = self._size, 0
        while need:
            if self._pending is None or self._offset == rows(self._pending):
                self._pull()
                empty = 0 if rows(self._pending) else empty + 1
                if empty == _MAX_EMPTY_BATCHES:
                    raise DataError(
                        f"No usable record in {empty} batches in a row; skipped so far:"
                        f" {self._counts}. Check config.data (path, and each modality's key)."
                    )
            take = min(need, rows(self._pending) - self._offset)
            if take == self._size:  # a whole batch with nothing skipped: no copy
                parts.append(dict(self._pending))
            elif take:
                parts.append(_take(self._pending, self._offset, self._offset + take))
            self._offset += take
            need -= take
        if len(parts) == 1:
            return parts[0]
        return {k: np.concatenate([p[k] for p in parts]) for k in parts[0]}

    def get_state(self) -> dict[str, Any]:
        if self._pending is None or self._offset == rows(self._pending):
            state, offset, counts = self._batches.get_state(), 0, self._counts
        else:
            state, offset, counts = self._pending_state, self._offset, self._counts_before
        return {**copy.deepcopy(state), "pending_offset": offset, "skipped": dict(counts)}

    def set_state(self, state: dict[str, Any]) -> None:
        state = dict(state)
        offset = state.pop("pending_offset", 0)
        counts = state.pop("skipped", {})
        self._batches.set_state(state)
        self._reset(counts)
        if offset:
            self._pull()
            self._offset = offset

    def seek(self, step: int) -> None:
        """Starts over at global step `step`, as `open_batches` places it; counts restart."""
        self._batches.close()
        self._batches = self._open_batches(step)
        self._reset({})

    def start_prefetch(self) -> None:
        self._batches.start_prefetch()

    def close(self) -> None:
        if not self._closed:
            self._batches.close()
            self._batches = None  # collected now, while the modules its __del__ uses exist
            super().close()
