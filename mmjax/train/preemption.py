"""Stop cleanly at a step boundary on SIGTERM or a platform preemption notice.

Schedulers (SLURM, Kubernetes, Cloud TPU maintenance) send SIGTERM some seconds before
killing a job. The handler only sets a flag; the loop checks it after each step, saves
a checkpoint and exits, so the next start resumes there. In a multi-process run all
processes must stop at the same step (saving is collective): they agree through JAX's
preemption sync point where the platform has one, and otherwise by a small all-gather
of the flag every `check_every` steps.
"""

import logging
import signal
import threading

import jax
import numpy as np
from jax.experimental import multihost_utils

# The exit status of a run stopped by SIGTERM: 128 + 15, as if killed by it, so that a
# wrapper script sees the run is not finished and can requeue it.
PREEMPTED_EXIT_CODE = 143


class Preempted(Exception):
    """The run saved a checkpoint at `step` and stopped because it was asked to."""

    def __init__(self, step: int, reason: str):
        super().__init__(f"{reason} at step {step}: checkpoint saved; rerun to resume.")
        self.step = step


class PreemptionWatcher:
    """A SIGTERM flag, agreed on by all processes."""

    def __init__(self, check_every: int = 10):
        self.check_every = max(1, check_every)
        self.signalled = False
        self._previous = None
        self._sync_point = jax.process_count() > 1
        if threading.current_thread() is threading.main_thread():
            self._previous = signal.signal(signal.SIGTERM, self._on_sigterm)

    def _on_sigterm(self, signum, frame) -> None:
        logging.warning("SIGTERM received: saving at the next step boundary, then exiting.")
        self.signalled = True

    def should_stop(self, step: int) -> str | None:
        """The reason to stop after `step`, or None."""
        if jax.process_count() == 1:
            return "SIGTERM" if self.signalled else None
        if self._sync_point:
            try:
                if multihost_utils.reached_preemption_sync_point(step):
                    return "Preemption notice"
            except Exception:  # no preemption service on this platform
                self._sync_point = False
        if step % self.check_every:
            return None
        flags = multihost_utils.process_allgather(np.int32(self.signalled))
        return "SIGTERM" if np.any(flags) else None

    def close(self) -> None:
        if self._previous is not None:
            signal.signal(signal.SIGTERM, self._previous)
            self._previous = None
