"""Diagnosis: a `jax.profiler` trace of chosen steps, and device memory in use.

`config.profile.start` (0: off) and `config.profile.steps`: the trace covers steps
start .. start + steps - 1 and is written under `<workdir>/profile` (open it with
TensorBoard's profile plugin or Perfetto).
"""

import logging

import jax
import ml_collections

from mmjax import storage


class StepProfiler:
    """Starts the trace before step `start` runs and stops it after the last step."""

    def __init__(self, config: ml_collections.ConfigDict, workdir: str):
        self.start, self.stop = config.start, config.start + max(config.steps, 1) - 1
        self.directory = storage.join(workdir, "profile")
        self._active = False

    def before(self, step: int) -> None:
        if self.start > 0 and step == self.start and not self._active:
            jax.profiler.start_trace(self.directory)
            self._active = True
            logging.info("Profiling steps %d to %d into %s.", self.start, self.stop, self.directory)

    def after(self, step: int, outputs=None) -> None:
        if self._active and step >= self.stop:
            jax.block_until_ready(outputs)
            self.close()

    def close(self) -> None:
        if self._active:
            jax.profiler.stop_trace()
            self._active = False


def device_memory() -> dict[str, float]:
    """Bytes in use, peak and limit on the first local device (empty where not reported,
    as on CPU)."""
    stats = jax.local_devices()[0].memory_stats() or {}
    keys = {"bytes_in_use": "in_use", "peak_bytes_in_use": "peak", "bytes_limit": "limit"}
    return {name: float(stats[k]) for k, name in keys.items() if k in stats}


def log_device_memory(when: str) -> None:
    m = device_memory()
    if not m:
        logging.info("Device memory %s: not reported by %s.", when, jax.devices()[0].platform)
        return
    parts = ", ".join(f"{k} {v / 2**30:.2f} GiB" for k, v in m.items())
    logging.info("Device memory %s (device 0): %s.", when, parts)
