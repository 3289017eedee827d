"""Webdataset tar shards (as img2dataset writes them) as a resumable Grain `IterDataset`.

Each epoch the shards are put in a fresh order (from the seed and the epoch), process p
of P takes every P-th of them, so processes read disjoint shards, and reads
`cycle_length` of its shards at once, one sample from each in turn. The pipeline then
shuffles within a window (pipeline.py). The state names, for each open shard, the byte
offset of its next sample: a resume reopens the shards there and reads on, exactly.

A shard that cannot be opened or turns out truncated or corrupt mid-run is logged and
skipped (a `Skipped("unreadable_shard")` marker takes its place, so it is counted);
samples already read from it stay. An epoch in which no shard yields anything fails.

When a checkpoint comes from another number of processes, the position is recovered at
shard granularity (`start_position`): whole shards are skipped by the number of samples
seen, from `*_stats.json` when img2dataset wrote them.
"""

import json
import logging
from typing import Any

import grain
import ml_collections
import numpy as np

from mmjax.data import tar
from mmjax.data.paths import list_files, open_file
from mmjax.data.skipped import Skipped
from mmjax.errors import DataError


def epoch_order(num_shards: int, seed: int, epoch: int) -> list[int]:
    """The order in which the shards are read in `epoch`, the same in every process."""
    return [int(i) for i in np.random.default_rng([seed, epoch]).permutation(num_shards)]


def process_shards(
    num_shards: int, seed: int, epoch: int, first: int, process_index: int, process_count: int
) -> list[int]:
    """Shards of `process_index` in `epoch`: every P-th of the order from position `first`."""
    return epoch_order(num_shards, seed, epoch)[first:][process_index::process_count]


class WdsSource:
    """Tar shards, read as a stream of raw records (webdataset samples: field -> bytes)."""

    def __init__(self, shards: list[str], cycle_length: int):
        self.shards = shards
        self.cycle_length = cycle_length

    def __repr__(self) -> str:
        return f"WdsSource({len(self.shards)} shards, first={self.shards[0]!r})"

    def stream(
        self, seed: int, process_index: int, process_count: int, start: tuple[int, int] = (0, 0)
    ) -> grain.IterDataset:
        """This process's samples from epoch `start[0]`, skipping the order's first `start[1]`."""
        if len(self.shards) < process_count:
            raise ValueError(
                f"{len(self.shards)} shards cannot be split over {process_count} processes:"
                " write more, smaller shards (each process needs its own)."
            )
        return _Stream(self, seed, process_index, process_count, start)

    def shard_sizes(self) -> list[int]:
        """Samples per shard: img2dataset's `_stats.json` "successes", else the first
        shard's count for all (a full scan of remote shards would be slow)."""
        sizes = []
        for path in self.shards:
            try:
                with open_file(path.removesuffix(".tar") + "_stats.json") as f:
                    sizes.append(int(json.load(f)["successes"]))
            except (OSError, ValueError, KeyError):
                break
        if len(sizes) == len(self.shards):
            return sizes
        with open_file(self.shards[0]) as f:
            count = sum(1 for _ in tar.samples(f))
        logging.info("No _stats.json for every shard: assuming %d samples per shard.", count)
        return [count] * len(self.shards)

    def start_position(self, samples_seen: int, seed: int) -> tuple[int, int]:
        """(epoch, shards of that epoch's order already read) after `samples_seen` samples."""
        sizes = self.shard_sizes()
        epoch, within = divmod(samples_seen, max(sum(sizes), 1))
        first = 0
        for shard in epoch_order(len(sizes), seed, epoch):
            if within < sizes[shard]:
                break
            within -= sizes[shard]
            first += 1
        return epoch, first


class _Stream(grain.IterDataset):
    def __init__(self, source: WdsSource, seed: int, p: int, count: int, start: tuple[int, int]):
        super().__init__()
        self._args = source, seed, p, count, start

    def __iter__(self) -> grain.DatasetIterator:
        return _StreamIterator(*self._args)

    def __str__(self) -> str:
        return f"WdsStream({self._args[0]!r})"


class _StreamIterator(grain.DatasetIterator):
    def __init__(self, source: WdsSource, seed: int, p: int, count: int, start: tuple[int, int]):
        super().__init__()
        self._source, self._seed, self._p, self._count = source, seed, p, count
        self._readers: dict[int, Any] = {}  # slot -> (file, sample generator)
        self._set_position(start[0], start[1])

    def _set_position(self, epoch: int, first: int) -> None:
        self._epoch, self._first = epoch, first
        self._mine = process_shards(
            len(self._source.shards), self._seed, epoch, first, self._p, self._count
        )
        self._next_shard = 0
        self._slots: list[list[int] | None] = [None] * self._source.cycle_length
        self._next_slot = 0
        self._yielded = 0  # samples this epoch: an epoch with none means no readable data

    def _close(self, slot: int) -> None:
        if slot in self._readers:
            f, generator = self._readers.pop(slot)
            generator.close()
            f.close()

    def _samples(self, slot: int):
        if slot not in self._readers:
            position, offset, _ = self._slots[slot]
            f = open_file(self._source.shards[self._mine[position]])
            try:
                f.seek(offset)
            except Exception:
                f.close()
                raise
            self._readers[slot] = f, tar.samples(f, offset)
        return self._readers[slot][1]

    def __next__(self) -> dict | Skipped:
        while True:
            if self._next_shard >= len(self._mine) and not any(self._slots):
                if self._mine and not self._yielded:  # (none left after a seek: next epoch)
                    raise DataError(
                        f"No readable sample in any of this process's {len(self._mine)}"
                        f" shards in epoch {self._epoch} (of {self._source!r})."
                    )
                self._set_position(self._epoch + 1, 0)
            i = self._next_slot
            self._next_slot = (i + 1) % len(self._slots)
            if self._slots[i] is None:
                if self._next_shard >= len(self._mine):
                    continue
                self._slots[i] = [self._next_shard, 0, 0]
                self._next_shard += 1
            path = self._source.shards[self._mine[self._slots[i][0]]]
            try:
                sample, offset = next(self._samples(i))
            except StopIteration:
                self._close(i)
                self._slots[i] = None
                continue
            except Exception as e:  # an unreadable shard is skipped, not fatal
                self._close(i)
                self._slots[i] = None
                logging.warning("Skipping the rest of shard %s: %s", path, e)
                return Skipped("unreadable_shard", path, f"{type(e).__name__}: {e}")
            self._slots[i][1] = offset
            self._slots[i][2] += 1
            if offset < 0:  # the shard's last sample
                self._close(i)
                self._slots[i] = None
            self._yielded += 1
            key = f"{path}:{sample.get('__key__', '')}"
            return {**sample, "__key__": key, "__epoch__": self._epoch}

    def get_state(self) -> dict[str, Any]:
        return {
            "epoch": self._epoch,
            "first": self._first,
            "next_shard": self._next_shard,
            "slots": [None if s is None else list(s) for s in self._slots],
            "next_slot": self._next_slot,
            "yielded": self._yielded,
        }

    def set_state(self, state: dict[str, Any]) -> None:
        for slot in list(self._readers):
            self._close(slot)
        self._set_position(state["epoch"], state["first"])
        if len(state["slots"]) != len(self._slots):
            raise ValueError(
                f"The checkpoint read {len(state['slots'])} shards at once; config.data."
                f"cycle_length is {len(self._slots)}. Set it back to resume exactly."
            )
        self._next_shard = state["next_shard"]
        self._slots = [None if s is None else list(s) for s in state["slots"]]
        self._next_slot = state["next_slot"]
        self._yielded = state["yielded"]

    def close(self) -> None:
        for slot in list(self._readers):
            self._close(slot)
        super().close()


def check(config: ml_collections.ConfigDict, num_processes: int | None = None) -> list[str]:
    """What is wrong with `config.path` before reading: it names no shards, fewer shards
    than processes, or none of its first few shards reads as a tar."""
    try:
        shards = list_files(config.path, ".tar")
    except (FileNotFoundError, ValueError) as e:
        return [str(e)]
    problems = []
    if num_processes and len(shards) < num_processes:
        problems.append(
            f"{len(shards)} shards cannot be split over {num_processes} processes: each"
            " process reads its own shards; write more, smaller shards."
        )
    errors = []
    for path in shards[:CHECKED_SHARDS]:
        try:
            with open_file(path) as f:
                next(tar.members(f), None)
            return problems
        except (OSError, tar.BadShard) as e:
            errors.append(f"{path}: {type(e).__name__}: {e}")
    problems.append(
        f"none of the first {len(errors)} shards reads as a tar ({errors[0]})."
        " Is the path right, and are the files webdataset tar shards?"
    )
    return problems


CHECKED_SHARDS = 4  # shards opened at start: a few bad ones are skipped later, all is a mistake


def build(config: ml_collections.ConfigDict) -> WdsSource:
    shards = list_files(config.path, ".tar")
    logging.info("Webdataset: %d shards from %s.", len(shards), config.path)
    return WdsSource(shards, config.cycle_length)
