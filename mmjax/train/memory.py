"""Refuse to start a step that cannot fit in device memory, before it runs."""

import jax

from mmjax.errors import UserError


class OutOfMemoryError(UserError, RuntimeError):
    """The compiled step needs more memory than a device has."""


def _gib(n: float) -> str:
    return f"{n / 2**30:.2f} GiB"


def check_fits(compiled: jax.stages.Compiled, device: jax.Device, hint: str) -> int | None:
    """Returns the bytes the step needs per device; raises if above the device's limit.

    Needed = arguments + outputs + temporaries - donated (aliased) buffers, from the
    compiled executable. Devices that report no limit (CPU) are not checked.
    """
    analysis = compiled.memory_analysis()
    if analysis is None:
        return None
    needed = (
        analysis.argument_size_in_bytes
        + analysis.output_size_in_bytes
        + analysis.temp_size_in_bytes
        - analysis.alias_size_in_bytes
    )
    stats = device.memory_stats() or {}
    limit = stats.get("bytes_limit")
    if limit and needed > limit:
        raise OutOfMemoryError(
            f"The compiled train step needs {_gib(needed)} per device but {device.device_kind}"
            f" has {_gib(limit)} available (arguments {_gib(analysis.argument_size_in_bytes)},"
            f" temporaries {_gib(analysis.temp_size_in_bytes)}). {hint}"
        )
    return needed
