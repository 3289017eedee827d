"""Grain pipelines: per-process shards of the global batch, exactly resumable.

The loop gets one iterator for every source (`train_iterator`):

- random-access sources (synthetic, arrayrecord, tfds): global shuffle (a new
  permutation every epoch) -> this process's slice -> prepare (each modality's reader:
  decode, crop, tokenize) -> batch, a `grain.MapDataset` read by threads. Batch k is a
  function of the seed and k.
- sources that read many records at once (`batch(indices)`: the multimodal synthetic
  source): the same indices, batched first, each batch read in one call, then prepared
  row by row; also a `grain.MapDataset` of batches, so also a function of the seed and k.
- streaming sources (wds): this process's shards, several read at once -> window
  shuffle -> prepare in threads (stages.ParallelMap) -> batch, a `grain.IterDataset`.

All end in `stages.TrainIterator`, which tops up batches that lost skipped records
(examples.py) and counts them. Its state goes into every checkpoint, so a resumed run
reads exactly the batches the uninterrupted run would have read, and counts the same.

When a checkpoint holds no state for this process layout (another number of processes),
`seek` places the iterator by the step alone: exactly for random-access sources (off by
the records skipped before that step, if any), and at shard granularity for streaming
sources, which say so in the log (wds.py).
"""

import functools
import hashlib
import logging
from collections.abc import Callable, Iterator
from typing import Protocol, runtime_checkable

import grain
import jax
import ml_collections
import numpy as np
from jax.experimental import multihost_utils

from mmjax.data import modalities, sources
from mmjax.data.examples import Prepare
from mmjax.data.stages import Batch, ParallelMap, TrainIterator, collate
from mmjax.registry import Registry

# How each kind of source becomes batches:
# kind -> (source, prepare, config, process_index, process_count) -> open_batches(step).
READERS = Registry("source kind")


@runtime_checkable
class BatchedSource(Protocol):
    """A random-access source that also reads many records in one call, much faster than
    one by one: `batch(indices)` -> {field: stacked values} (arrays [B, ...], or lists)."""

    def __len__(self) -> int: ...

    def batch(self, indices: np.ndarray) -> dict: ...


@runtime_checkable
class StreamingSource(Protocol):
    """A source read in order (wds.WdsSource); random-access ones have __getitem__."""

    def stream(self, seed: int, process_index: int, process_count: int, start=(0, 0)): ...

    def start_position(self, samples_seen: int, seed: int) -> tuple[int, int]: ...


def local_batch_size(global_batch: int, process_count: int) -> int:
    if global_batch % process_count:
        raise ValueError(f"Global batch {global_batch} does not split over {process_count} hosts.")
    return global_batch // process_count


def train_dataset(
    source,
    prepare: Prepare,
    global_batch: int,
    seed: int,
    process_index: int,
    process_count: int,
) -> grain.MapDataset:
    """Batch k of process p holds global examples p, p + P, ... of the k-th global batch.

    The union of the processes' k-th batches is the k-th global batch of a 1-process run
    (when no record is skipped). Batches are `stages.Batch`es: the good examples, and
    the skipped records' markers, which `TrainIterator` counts and replaces.
    """
    local = local_batch_size(global_batch, process_count)
    ds = grain.MapDataset.source(source).shuffle(seed=seed).repeat(None)
    # Prepared before the slice: example n's crops come from (seed, n), its place in the
    # global stream, whatever the number of processes.
    ds = ds.map_with_index(lambda n, raw: prepare(raw, example_rng(seed, n)))
    ds = ds[process_index::process_count]
    return ds.batch(local, drop_remainder=True, batch_fn=collate)


def example_rng(seed: int, position: int) -> np.random.Generator:
    """The generator of the example at `position` in the global stream of examples (batch
    k holds positions k * B ... k * B + B - 1): a function of the seed and that position
    only, so the same whatever the number of processes or a resume."""
    return np.random.default_rng([seed, position])


def record_rng(seed: int, raw) -> np.random.Generator:
    """The generator of a streamed record: from its key (shard and sample) and the epoch
    it is read in, so the same whichever process reads it."""
    key = raw.get("__key__", "") if isinstance(raw, dict) else ""
    digest = int.from_bytes(hashlib.blake2b(key.encode(), digest_size=8).digest(), "little")
    epoch = raw.get("__epoch__", 0) if isinstance(raw, dict) else 0
    return np.random.default_rng([seed, digest, epoch])


def as_iterator(ds: grain.MapDataset, config: ml_collections.ConfigDict) -> grain.DatasetIterator:
    """Threads decode ahead of the train step; the iterator's state stays exact."""
    options = grain.ReadOptions(
        num_threads=config.num_threads, prefetch_buffer_size=config.prefetch
    )
    return iter(ds.to_iter_dataset(options))


@READERS.register("random_access")
def random_access_batches(
    source,
    prepare: Prepare,
    config: ml_collections.ConfigDict,
    process_index: int,
    process_count: int,
) -> Callable[[int], grain.DatasetIterator]:
    """`open_batches(step)` over `train_dataset`: batch `step` is found by index."""
    ds = train_dataset(
        source, prepare, config.batch_size, config.seed, process_index, process_count
    )

    def open_batches(step: int) -> grain.DatasetIterator:
        batches = as_iterator(ds, config.data)
        if step:
            batches.set_state({"next_index": step})
        return batches

    return open_batches


def _read_batch(
    source: BatchedSource,
    prepare: Prepare,
    seed: int,
    process_index: int,
    process_count: int,
    k: int,
    indices: np.ndarray,
) -> Batch:
    """Batch `k` of this process: its records read in one call, then prepared row by row,
    each with randomness from the example's place in the global stream of examples (so
    the same whatever the number of processes)."""
    raw = source.batch(indices)
    local = len(indices)
    first = k * local * process_count + process_index  # global position of row 0
    elements = [
        prepare(
            {name: values[j] for name, values in raw.items()},
            example_rng(seed, first + j * process_count),
        )
        for j in range(local)
    ]
    return collate(elements)


@READERS.register("batched")
def batched_batches(
    source: BatchedSource,
    prepare: Prepare,
    config: ml_collections.ConfigDict,
    process_index: int,
    process_count: int,
) -> Callable[[int], grain.DatasetIterator]:
    """`open_batches(step)` over batched reads: the records of `random_access_batches`
    (the same shuffle and slice of indices), batch `step` found by index."""
    local = local_batch_size(config.batch_size, process_count)
    indices = grain.MapDataset.range(len(source)).shuffle(seed=config.seed).repeat(None)
    indices = indices[process_index::process_count].batch(local, drop_remainder=True)
    read = functools.partial(
        _read_batch, source, prepare, config.seed, process_index, process_count
    )
    ds = indices.map_with_index(read)

    def open_batches(step: int) -> grain.DatasetIterator:
        batches = as_iterator(ds, config.data)
        if step:
            batches.set_state({"next_index": step})
        return batches

    return open_batches


def source_kind(source) -> str:
    """Which of `READERS` turns `source` into batches."""
    if isinstance(source, StreamingSource):
        return "streaming"
    return "batched" if isinstance(source, BatchedSource) else "random_access"


def prepare_streamed(prepare: Prepare, seed: int, raw, index: int):
    """`prepare` with randomness from the record's identity (`record_rng`)."""
    del index
    return prepare(raw, record_rng(seed, raw))


@READERS.register("streaming")
def streaming_batches(
    source: StreamingSource,
    prepare: Prepare,
    config: ml_collections.ConfigDict,
    process_index: int,
    process_count: int,
) -> Callable[[int], grain.DatasetIterator]:
    """`open_batches(step)` over the stream: from the start, or from whole shards on."""
    data, seed = config.data, config.seed
    local = local_batch_size(config.batch_size, process_count)
    prepare_at = functools.partial(prepare_streamed, prepare, seed)
    buffer = max(data.prefetch, 1) * local

    def open_batches(step: int) -> grain.DatasetIterator:
        start = (0, 0)
        if step:
            start = source.start_position(step * config.batch_size, seed)
            logging.warning(
                "Streaming source: the checkpoint has no data state for %d processes, so"
                " reading restarts at shard granularity: epoch %d after the first %d shards"
                " of its order. Examples of partly read shards may repeat or be missed.",
                process_count,
                *start,
            )
        ds = source.stream(seed, process_index, process_count, start)
        if data.shuffle_buffer > 1:
            ds = grain.experimental.WindowShuffleIterDataset(
                ds, window_size=data.shuffle_buffer, seed=seed
            )
        ds = grain.experimental.ThreadPrefetchIterDataset(ds, prefetch_buffer_size=buffer)
        processes = data.get("worker_processes", 0)
        ds = ParallelMap(ds, prepare_at, max(data.num_threads, 1), buffer, processes)
        return iter(ds.batch(local, drop_remainder=True, batch_fn=collate))

    return open_batches


def train_iterator(
    config: ml_collections.ConfigDict, process_index: int, process_count: int
) -> TrainIterator:
    """This process's batches {modality: array} from `config.data`, exactly resumable.

    Its `skipped` counts the records skipped by reason (`skip_counts` for metrics).
    """
    source = sources.build_source(config.data, "train", config.seed)
    prepare = Prepare(modalities.build_readers(config, train=True))
    open_batches = READERS.get(source_kind(source))(
        source, prepare, config, process_index, process_count
    )
    local = local_batch_size(config.batch_size, process_count)
    return TrainIterator(open_batches, local, modalities.skip_reasons(config))


def skip_counts(data_iter: grain.DatasetIterator) -> dict[str, float]:
    """Records skipped so far, by reason and in all, summed over processes (a collective:
    every process calls it at the same step)."""
    if not getattr(data_iter, "reasons", None):  # a TrainIterator, or one that wraps it
        return {}
    counts, reasons = data_iter.skipped, data_iter.reasons
    values = np.array([counts.get(r, 0) for r in reasons], np.int32)
    if jax.process_count() > 1:
        values = np.asarray(multihost_utils.process_allgather(values)).sum(0)
    out = {f"data_skipped/{r}": float(v) for r, v in zip(reasons, values)}
    out["data_skipped"] = float(values.sum())
    return out


def eval_batches(
    source, batch_size: int, process_index: int, process_count: int
) -> Iterator[tuple[dict, np.ndarray]]:
    """Every example exactly once, in global batches of `batch_size`, the last padded.

    Yields this process's part of each global batch and a mask (1 real, 0 padding).
    The padding repeats example 0, so it is a valid input that the mask then drops.
    """
    local = local_batch_size(batch_size, process_count)
    n = len(source)
    for start in range(0, n, batch_size):
        first = start + process_index * local
        indices = np.arange(first, first + local)
        mask = indices < n
        examples = [source[int(i) if ok else 0] for i, ok in zip(indices, mask)]
        batch = {k: np.stack([e[k] for e in examples]) for k in examples[0] if k != "text"}
        yield batch, mask.astype(np.float32)


def seek(data_iter: grain.DatasetIterator, step: int) -> None:
    """Moves an iterator from `train_iterator` (or over `train_dataset`) to global step `step`.

    For random-access sources the data position is a pure function of the seed and
    the step, whatever the number of processes: this is how a checkpoint written by
    another process layout resumes on the next batch. Streaming sources restart at
    the shard where that step falls (and log it).
    """
    if isinstance(data_iter, TrainIterator):
        data_iter.seek(step)
    else:
        data_iter.set_state({"next_index": step})
