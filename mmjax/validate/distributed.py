"""The multi-process fields, which must hold before the runtime starts."""

from collections.abc import Iterator

import ml_collections

from mmjax.config import ConfigError, Problem
from mmjax.errors import unknown_name
from mmjax.validate.core import Context, format_problems, register


@register
def distributed(ctx: Context) -> Iterator[Problem]:
    """A coherent explicit multi-process set-up (checked before the runtime starts)."""
    d = ctx.config.distributed
    if d.cpu_collectives not in ("", "gloo", "mpi"):
        yield Problem(
            "distributed.cpu_collectives",
            unknown_name("CPU collectives", d.cpu_collectives, ("gloo", "mpi")),
        )
    if d.initialize and d.coordinator_address:
        if d.num_processes < 1:
            yield Problem("distributed.num_processes", f"must be >= 1, got {d.num_processes}.")
        elif not 0 <= d.process_id < d.num_processes:
            yield Problem(
                "distributed.process_id",
                f"must be in [0, {d.num_processes - 1}] (num_processes={d.num_processes}),"
                f" got {d.process_id}.",
            )
        if ":" not in d.coordinator_address:
            yield Problem(
                "distributed.coordinator_address",
                f"{d.coordinator_address!r} is not HOST:PORT.",
            )


def check_distributed(config: ml_collections.ConfigDict) -> None:
    """Only the multi-process fields: what must hold before the runtime starts."""
    found = list(distributed(Context(config)))
    if found:
        raise ConfigError(format_problems(found))
