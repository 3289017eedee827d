"""Orbax checkpoints holding the train state and the data iterator together.

Saves are asynchronous: `save` returns once the arrays are copied off the devices, and
the write goes on in the background. A step is written as `N.orbax-checkpoint-tmp` and
renamed to `N` only when complete, so an interrupted save is never restored.
"""

import logging
import os
from typing import Any

import grain
import orbax.checkpoint as ocp


class Checkpointer:
    """A `CheckpointManager` for items "state" (a pytree) and "data" (a Grain iterator)."""

    def __init__(self, directory: str, every: int, keep: int, async_save: bool = True):
        self.every = every
        self.manager = ocp.CheckpointManager(
            directory if "://" in directory else os.path.abspath(directory),
            options=ocp.CheckpointManagerOptions(
                max_to_keep=keep,
                enable_async_checkpointing=async_save,
                cleanup_tmp_directories=True,
                create=True,
            ),
        )

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

    def restore(
        self, step: int, abstract_state: Any, data_iter: grain.DatasetIterator | None
    ) -> Any:
        """Restores onto the shardings in `abstract_state` (ShapeDtypeStructs).

        The target shardings come from the current mesh, so a checkpoint written on one
        topology restores on another. `data_iter`, when given, is set to the saved position.
        """
        items = {"state": ocp.args.StandardRestore(abstract_state)}
        if data_iter is not None:
            items["data"] = grain.checkpoint.CheckpointRestore(data_iter)
        restored = self.manager.restore(step, args=ocp.args.Composite(**items))
        logging.info("Restored checkpoint at step %d from %s.", step, self.manager.directory)
        return restored["state"]

    def close(self) -> None:
        """Waits for in-flight saves: exiting before this loses them."""
        self.manager.wait_until_finished()
        self.manager.close()
