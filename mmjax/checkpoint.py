"""Orbax checkpoints holding the train state and the data iterator together.

Saves are asynchronous: `save` returns once the arrays are copied off the devices, and
the write goes on in the background. A step is written as `N.orbax-checkpoint-tmp` and
renamed to `N` only when complete, so an interrupted save is never restored.
"""

import glob
import logging
import os
from typing import Any

import grain
import jax
import numpy as np
import orbax.checkpoint as ocp


class CheckpointError(RuntimeError):
    """Checkpoints exist but none can be restored into the current run."""


class Checkpointer:
    """A `CheckpointManager` for items "state" (a pytree) and "data" (a Grain iterator)."""

    def __init__(
        self,
        directory: str,
        every: int = 0,
        keep: int = 1,
        async_save: bool = True,
        read_only: bool = False,
    ):
        """`read_only` for readers (standalone evaluation, conversion) of a directory that a
        training run may be saving into: they must not clean up its in-flight save."""
        self.every = every
        directory = directory if "://" in directory else os.path.abspath(directory)
        self.directory = directory
        if read_only:
            options = ocp.CheckpointManagerOptions(read_only=True, create=False)
        else:
            for leftover in sorted(glob.glob(os.path.join(directory, "*.orbax-checkpoint-tmp*"))):
                logging.warning("Ignoring incomplete checkpoint %s (interrupted save).", leftover)
            options = ocp.CheckpointManagerOptions(
                max_to_keep=keep,
                enable_async_checkpointing=async_save,
                cleanup_tmp_directories=True,
                create=True,
            )
        self.manager = ocp.CheckpointManager(directory, options=options)

    def all_steps(self) -> list[int]:
        return sorted(self.manager.all_steps())

    def latest_step(self) -> int | None:
        return self.manager.latest_step()

    def save(self, step: int, state: Any, data_iter: grain.DatasetIterator) -> None:
        """Saves `state` and the iterator position after `step` steps."""
        self.manager.save(
            step,
            args=ocp.args.Composite(
                state=ocp.args.StandardSave(state),
                data=grain.checkpoint.CheckpointSave(data_iter),
            ),
            force=True,
        )

    def maybe_save(self, step: int, state: Any, data_iter: grain.DatasetIterator) -> None:
        if step % self.every == 0:
            self.save(step, state, data_iter)

    def has_data_state(self, step: int) -> bool:
        """Whether `step` holds an iterator state for this process layout.

        Grain writes one file per process; a checkpoint from another number of processes
        has none for us, and the caller must derive the data position otherwise.
        """
        name = f"process_{jax.process_index()}-of-{jax.process_count()}.json"
        return os.path.exists(os.path.join(self.directory, str(step), "data", name))

    def restore(
        self, step: int, abstract_state: Any, data_iter: grain.DatasetIterator | None
    ) -> tuple[Any, bool]:
        """Restores onto the shardings in `abstract_state` (ShapeDtypeStructs).

        The target shardings come from the current mesh, so a checkpoint written on one
        topology restores on another. `data_iter`, when given and when the checkpoint has
        a state for this process layout, is set to the saved position. Returns
        (state, whether the data iterator was restored).
        """
        items = {"state": ocp.args.StandardRestore(abstract_state)}
        with_data = data_iter is not None and self.has_data_state(step)
        if with_data:
            items["data"] = grain.checkpoint.CheckpointRestore(data_iter)
        restored = self.manager.restore(step, args=ocp.args.Composite(**items))
        logging.info("Restored checkpoint at step %d from %s.", step, self.directory)
        return restored["state"], with_data

    def restore_params(
        self, step: int, abstract_params: Any, as_numpy: bool = False, field: str = "params"
    ) -> Any:
        """Only the parameters of `step`, not the optimizer state (a third of the memory).

        Onto the shardings in `abstract_params` (ShapeDtypeStructs), or as host numpy
        arrays with `as_numpy`, whatever mesh wrote them. For evaluation and export.
        `field`: another part of the state shaped like parameters ("ema").
        """
        target = {field: abstract_params}
        if as_numpy:
            args = jax.tree.map(lambda _: ocp.RestoreArgs(restore_type=np.ndarray), target)
        else:
            args = jax.tree.map(lambda x: ocp.ArrayRestoreArgs(sharding=x.sharding), target)
        restored = self.manager.restore(
            step,
            args=ocp.args.Composite(
                state=ocp.args.PyTreeRestore(item=target, restore_args=args, partial_restore=True)
            ),
        )
        return restored["state"][field]

    def restore_newest(
        self, abstract_state: Any, data_iter: grain.DatasetIterator | None
    ) -> tuple[int, Any, bool] | None:
        """(step, state, data restored) from the newest checkpoint that restores, or None.

        A checkpoint that fails to restore (e.g. one whose deletion by `max_to_keep` was
        cut short by a kill) is skipped with a warning, and the next older one is tried.
        """
        steps = sorted(self.manager.all_steps(), reverse=True)
        errors = []
        for step in steps:
            try:
                return step, *self.restore(step, abstract_state, data_iter)
            except Exception as error:  # any unreadable checkpoint: try the next older one
                logging.warning("Skipping unreadable checkpoint %d: %s", step, error)
                errors.append(str(error))
        if steps:  # never start from scratch silently on top of a run's checkpoints
            raise CheckpointError(
                f"None of the checkpoints in {self.directory} (steps {steps}) restores into"
                " this run. Does the config match the one they were written with (model,"
                f" optimizer)? Newest error: {errors[0][:500]}"
            )
        return None

    def close(self) -> None:
        """Waits for in-flight saves: exiting before this loses them."""
        self.manager.wait_until_finished()
        self.manager.close()
