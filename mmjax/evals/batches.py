"""Evaluation data on the mesh: sharded, padded and masked batches; host arrays in and out.

Every evaluator reads its dataset through `global_batches` (the pipeline's `eval_batches`
made global): each example once, the last batch padded and masked, so results do not
depend on the number of devices or on the dataset size. `Gatherer` brings per-example
outputs (embeddings, labels) back to the host in dataset order, whatever the layout of
the batch over devices and processes.
"""

import math
from collections.abc import Callable, Iterator
from typing import Any

import jax
import numpy as np
from jax.sharding import Mesh

from mmjax.data.pipeline import eval_batches
from mmjax.data.stages import background
from mmjax.evals.progress import Ticker
from mmjax.parallel import sharding
from mmjax.parallel.mesh import BATCH_AXES

EVAL_PREFETCH = 2  # evaluation batches read and put on the devices ahead


def replicated_rows(rows: np.ndarray, mesh: Mesh) -> jax.Array:
    """A host array that every process holds whole -> the same array on every device."""
    return jax.make_array_from_callback(
        rows.shape, sharding.replicated(mesh), lambda index: rows[index]
    )


def batch_shards(mesh: Mesh) -> int:
    """How many pieces a global batch is split into (the batch mesh axes)."""
    return math.prod(mesh.shape[a] for a in BATCH_AXES)


def round_batch(batch_size: int, mesh: Mesh) -> int:
    """The batch size rounded up to split evenly over the batch shards."""
    n = batch_shards(mesh)
    return -(-batch_size // n) * n


class ArraySource:
    """Rows of host arrays as a random-access source: {name: array[i]}."""

    def __init__(self, **arrays: np.ndarray):
        lengths = {len(a) for a in arrays.values()}
        if len(lengths) != 1:
            raise ValueError(
                f"Arrays of different lengths: { {k: len(a) for k, a in arrays.items()} }"
            )
        self.arrays = arrays
        self.length = lengths.pop()

    def __len__(self) -> int:
        return self.length

    def __getitem__(self, index: int) -> dict[str, np.ndarray]:
        return {k: a[index] for k, a in self.arrays.items()}


class Indexed:
    """A source whose examples keep only `keys` and carry their own index."""

    def __init__(self, source: Any, keys: tuple[str, ...]):
        self.source, self.keys = source, keys

    def __len__(self) -> int:
        return len(self.source)

    def __getitem__(self, index: int) -> dict[str, np.ndarray]:
        example = self.source[index]
        return {**{k: example[k] for k in self.keys}, "index": np.int32(index)}


def global_batches(
    source: Any, batch_size: int, mesh: Mesh, desc: str = "evaluation"
) -> Iterator[dict[str, jax.Array]]:
    """Global batches over the mesh's batch axes, each with a "mask" (0 on padding).

    `batch_size` is rounded up to a multiple of the batch shards. Logs progress for
    long passes (evals/progress.py).
    """
    batch_size = round_batch(batch_size, mesh)
    ticker = Ticker(desc, math.ceil(len(source) / batch_size))
    local = eval_batches(source, batch_size, jax.process_index(), jax.process_count())
    made = (sharding.global_batch({**b, "mask": m}, mesh) for b, m in local)
    for batch in background(made, EVAL_PREFETCH):  # the next batches read meanwhile
        yield batch
        ticker.tick()


class Gatherer:
    """Runs `fn(params, batch) -> {name: [batch, ...]}` over a source; host arrays out.

    Built once per evaluator so that `fn` compiles once. Outputs come back replicated,
    and rows are put in their place by index, so the result is in dataset order
    whatever the layout of the global batch over devices and processes.
    """

    def __init__(self, fn: Callable[[Any, dict], dict], mesh: Mesh, keys: tuple[str, ...]):
        self.mesh, self.keys = mesh, keys

        def with_index(params: Any, batch: dict) -> dict:
            return {**fn(params, batch), "index": batch["index"], "mask": batch["mask"]}

        self._fn = jax.jit(with_index, out_shardings=sharding.replicated(mesh))

    def __call__(
        self, params: Any, source: Any, batch_size: int, desc: str
    ) -> dict[str, np.ndarray]:
        out: dict[str, np.ndarray] = {}
        for batch in global_batches(Indexed(source, self.keys), batch_size, self.mesh, desc):
            result = jax.device_get(self._fn(params, batch))
            keep = result.pop("mask") > 0
            index = result.pop("index")[keep]
            for name, rows in result.items():
                if name not in out:
                    out[name] = np.zeros((len(source), *rows.shape[1:]), rows.dtype)
                out[name][index] = rows[keep]
        return out
