"""Stop a run that keeps producing non-finite steps, naming the checkpoint to go back to.

The train step itself drops any update whose loss or gradient norm is NaN or Inf
(train/step.py); this turns a run of them into a clear error instead of wasted hours.
"""

import jax

from mmjax.errors import UserError


class NonFiniteError(UserError, RuntimeError):
    """Too many consecutive steps with a non-finite loss or gradient."""


class NonFiniteGuard:
    """Checks the previous step's counter, so that checking never stalls the device."""

    def __init__(self, max_in_a_row: int, checkpoint_dir: str):
        self.max_in_a_row = max_in_a_row
        self.checkpoint_dir = checkpoint_dir
        self._pending: tuple[int, jax.Array] | None = None

    def check(self, step: int, skipped_in_a_row: jax.Array, last_good: int | None) -> None:
        """Looks at the counter of the step before `step`, then remembers this one's."""
        pending, self._pending = self._pending, (step, skipped_in_a_row)
        if pending is not None:
            self._raise_if_too_many(*pending, last_good)

    def flush(self, last_good: int | None) -> None:
        if self._pending is not None:
            self._raise_if_too_many(*self._pending, last_good)
            self._pending = None

    def _raise_if_too_many(self, step: int, in_a_row: jax.Array, last_good: int | None) -> None:
        n = int(in_a_row)
        if self.max_in_a_row and n >= self.max_in_a_row:
            where = (
                f"{self.checkpoint_dir}/{last_good}" if last_good is not None else "none saved yet"
            )
            raise NonFiniteError(
                f"Steps {step - n + 1}..{step} ({n} in a row) had a non-finite loss or gradient"
                f" norm; their updates were dropped. Last good checkpoint: {where}. Lower"
                " config.optim.lr, check the data around these steps, or raise"
                " config.max_nonfinite_in_a_row."
            )
