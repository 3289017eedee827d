"""Grain pipelines: per-process shards of the global batch, exactly resumable.

Training: source -> global shuffle (reshuffled every epoch) -> this process's slice ->
tokenize -> batch, as a `grain.MapDataset` turned into an iterator with threads and
prefetch. Its `get_state()` goes into every checkpoint, so a resumed run reads exactly
the batches the uninterrupted run would have read.
"""

from collections.abc import Iterator

import grain
import ml_collections
import numpy as np

from mmjax.data.tokenizers import Tokenizer


class Tokenize(grain.transforms.Map):
    """{"image", "text", ...} -> {"image", "tokens"}: what a train step consumes."""

    def __init__(self, tokenizer: Tokenizer):
        self.tokenizer = tokenizer

    def map(self, example: dict) -> dict:
        return {"image": example["image"], "tokens": self.tokenizer(example["text"])}


def local_batch_size(global_batch: int, process_count: int) -> int:
    if global_batch % process_count:
        raise ValueError(f"Global batch {global_batch} does not split over {process_count} hosts.")
    return global_batch // process_count


def train_dataset(
    source,
    tokenizer: Tokenizer,
    global_batch: int,
    seed: int,
    process_index: int,
    process_count: int,
) -> grain.MapDataset:
    """Batch k of process p holds global examples p, p + P, ... of the k-th global batch.

    The union of the processes' k-th batches is the k-th global batch of a 1-process run.
    """
    local = local_batch_size(global_batch, process_count)
    ds = grain.MapDataset.source(source).shuffle(seed=seed).repeat(None)
    ds = ds[process_index::process_count]
    return ds.map(Tokenize(tokenizer)).batch(local, drop_remainder=True)


def as_iterator(ds: grain.MapDataset, config: ml_collections.ConfigDict) -> grain.DatasetIterator:
    """Threads decode ahead of the train step; the iterator's state stays exact."""
    options = grain.ReadOptions(
        num_threads=config.num_threads, prefetch_buffer_size=config.prefetch
    )
    return iter(ds.to_iter_dataset(options))


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
    """Moves an iterator over `train_dataset` to global batch `step`.

    For random-access sources the data position is a pure function of the seed and
    the step, whatever the number of processes: this is how a checkpoint written by
    another process layout resumes on exactly the next batch.
    """
    data_iter.set_state({"next_index": step})
