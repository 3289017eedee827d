"""Orbax checkpoints holding the train state and the data iterator together.

Saves are asynchronous: `save` returns once the arrays are copied off the devices, and
the write goes on in the background. A step is written as `N.orbax-checkpoint-tmp` and
renamed to `N` only when complete (on gs://, written in place and committed by
`N/commit_success.txt`), so an interrupted save is never restored.

Each step also holds `mmjax_checksums.json`: the size and checksum of every file (CRC-32
of the content; on gs:// the CRC32C that GCS keeps, so nothing is read back), written by
process 0 just before the step is committed. Orbax notices a damaged manifest or metadata
file, but a bit flipped in array data restores silently as a different number; the
checksums catch it, and a truncated or missing file, before anything is restored
(checkpoint_files.py). A step that is damaged, or that does not fit the model, is skipped
with a warning naming the step and the file, and the next older one is restored.

In a multi-process run the processes agree on every decision (`parallel/agree.py`):
which steps exist, whether a step is intact (each process checks its share of the
files), whether it restored, whether its data state restores.
"""

import logging
import time
from typing import Any

import grain
import jax
import numpy as np
import orbax.checkpoint as ocp

from mmjax import storage
from mmjax.checkpoint_files import (
    TMP_SUFFIX,
    check_files,
    incomplete_saves,
    misfit,
    write_checksums,
)
from mmjax.errors import UserError
from mmjax.parallel import agree

# A process that failed to restore a step waits this long for the others' verdict; a
# process that restored waits in Orbax's barrier meanwhile, so the wait ends either way.
VERDICT_TIMEOUT_S = 300.0


class CheckpointError(UserError, RuntimeError):
    """Checkpoints exist but none can be restored into the current run."""


# The two-tower model (mmjax before multi-tower models) kept its projections at the top of
# the parameter tree; the multi-tower tree has only modalities and "objectives" there.
TWO_TOWER_KEYS = ("image_proj", "text_proj")
UPGRADE_HINT = (
    "written by mmjax before multi-tower models: run python tools/upgrade_checkpoint.py"
    " --workdir={workdir} to rewrite its checkpoints and config.json in the new layout"
)


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
        self.read_only = read_only
        self.directory = directory = storage.absolute(directory)
        self._async = async_save
        self._saving: int | None = None  # the step whose asynchronous save is in flight
        # Orbax's first collective follows: every process must be here (gloo's context
        # set-up gives a late process only 30 s).
        agree.barrier("checkpointer", timeout_s=3600.0)
        if read_only:
            options = ocp.CheckpointManagerOptions(read_only=True, create=False)
        else:
            for leftover in incomplete_saves(directory):
                logging.warning("Ignoring incomplete checkpoint %s (interrupted save).", leftover)
            options = ocp.CheckpointManagerOptions(
                max_to_keep=keep,
                enable_async_checkpointing=async_save,
                cleanup_tmp_directories=True,
                create=True,
                async_options=ocp.AsyncOptions(post_finalization_callback=self._before_commit)
                if async_save
                else None,
            )
        self.manager = ocp.CheckpointManager(directory, options=options)

    def all_steps(self) -> list[int]:
        return sorted(self.manager.all_steps())

    def latest_step(self) -> int | None:
        return self.manager.latest_step()

    def save(self, step: int, state: Any, data_iter: grain.DatasetIterator) -> None:
        """Saves `state` and the iterator position after `step` steps."""
        self.manager.wait_until_finished()  # Orbax waits anyway; then _saving is ours
        self._saving = step
        self.manager.save(
            step,
            args=ocp.args.Composite(
                state=ocp.args.StandardSave(state),
                data=grain.checkpoint.CheckpointSave(data_iter),
            ),
            force=True,
        )
        if not self._async and jax.process_index() == 0:
            write_checksums(storage.join(self.directory, str(step)))

    def _before_commit(self) -> None:
        """On process 0, once every process has written the step and before Orbax
        commits it: the checksums become part of the committed step."""
        step = self._saving
        names = [n for n in storage.listdir(self.directory) if n.startswith(f"{step}{TMP_SUFFIX}")]
        step_dir = storage.join(self.directory, max(names) if names else str(step))
        try:
            write_checksums(step_dir)
        except Exception as error:  # the step stays restorable, just unverified
            logging.warning("No checksums for checkpoint %s: %s", step, error)

    def maybe_save(self, step: int, state: Any, data_iter: grain.DatasetIterator) -> None:
        if step % self.every == 0:
            self.save(step, state, data_iter)

    def has_data_state(self, step: int) -> bool:
        """Whether `step` holds an iterator state for this process layout.

        Grain writes one file per process; a checkpoint from another number of processes
        has none for us, and the caller must derive the data position otherwise.
        """
        name = f"process_{jax.process_index()}-of-{jax.process_count()}.json"
        return storage.exists(storage.join(self.directory, str(step), "data", name))

    def check(self, step: int) -> list[str]:
        """Problems with `step`'s files (this process's share of them); [] if intact."""
        step_dir = storage.join(self.directory, str(step))
        return check_files(step_dir, jax.process_index(), jax.process_count())

    def _agreed_data_state(self, step: int, data_iter: Any) -> bool:
        """Whether every process restores its data state (all do, or none does)."""
        have = agree.allgather("ckpt_data", data_iter is not None and self.has_data_state(step))
        if any(have) and not all(have):
            missing = [i for i, h in enumerate(have) if not h]
            logging.warning(
                "Checkpoint %d has no data state for processes %s: every process derives"
                " its data position from the step instead.",
                step,
                missing,
            )
        return all(have)

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
        with_data = self._agreed_data_state(step, data_iter)
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
        try:
            restored = self.manager.restore(
                step,
                args=ocp.args.Composite(
                    state=ocp.args.PyTreeRestore(
                        item=target, restore_args=args, partial_restore=True
                    )
                ),
            )
        except Exception as error:
            if self.is_two_tower(step):
                raise CheckpointError(f"Checkpoint {step} was {self._upgrade_hint()}.") from error
            raise
        return restored["state"][field]

    def _set_aside(self, steps: list[int]) -> None:
        """Renames skipped steps to `N.damaged` (kept for a post-mortem, ignored by Orbax),
        so that the resumed run can save step N again."""
        if self.read_only:
            return
        if jax.process_index() == 0:
            for step in steps:
                target = storage.join(
                    self.directory, f"{step}.damaged-{time.strftime('%Y%m%d-%H%M%S')}"
                )
                storage.rename(storage.join(self.directory, str(step)), target)
                logging.warning("Moved checkpoint %d aside to %s.", step, target)
        agree.barrier("ckpt_set_aside")
        self.manager.reload()

    def _agreed_steps(self) -> list[int]:
        """The steps every process sees, newest first; fails when they see none in common."""
        views = agree.allgather("ckpt_steps", self.all_steps())
        common = sorted(set.intersection(*map(set, views)), reverse=True)
        if any(v != views[0] for v in views):
            shown = "; ".join(f"process {i}: {v}" for i, v in enumerate(views))
            if not common and any(views):
                raise CheckpointError(
                    f"The processes see different checkpoints in {self.directory} and none"
                    f" in common ({shown}). Is the workdir on storage every host shares?"
                )
            logging.warning(
                "The processes see different checkpoints (%s); using %s.", shown, common
            )
        return common

    def is_two_tower(self, step: int) -> bool:
        """Whether `step` holds the parameters of the two-tower model (mmjax before
        multi-tower models), read from the saved tree's metadata alone."""
        try:
            params = self.manager.item_metadata(step)["state"].tree["params"]
        except Exception:  # no metadata to read: not recognisably the old layout
            return False
        return all(k in params for k in TWO_TOWER_KEYS)

    def _upgrade_hint(self) -> str:
        workdir = storage.parent(self.directory)
        return UPGRADE_HINT.format(workdir=workdir)

    def restore_newest(
        self, abstract_state: Any, data_iter: grain.DatasetIterator | None
    ) -> tuple[int, Any, bool] | None:
        """(step, state, data restored) from the newest checkpoint that restores, or None.

        A damaged checkpoint (a file missing, truncated or changed since it was written,
        or a deletion by `max_to_keep` cut short by a kill) or one that does not fit this
        run is skipped with a warning naming the step and the problem, and the next older
        one is tried. All processes take the same decision at every step.
        """
        steps = self._agreed_steps()
        skipped: list[str] = []
        for step in steps:
            problems = agree.allgather("ckpt_check", self.check(step))
            found = [(i, p) for i, ps in enumerate(problems) for p in ps]
            if found:
                for i, p in found:
                    where = f" (found by process {i})" if jax.process_count() > 1 else ""
                    logging.warning("Skipping damaged checkpoint %d: %s%s", step, p, where)
                skipped.append(f"{step} ({found[0][1]})")
                continue
            try:
                restored, error = self.restore(step, abstract_state, data_iter), None
            except Exception as e:  # unreadable, or another model's: try the next older one
                restored, error = None, f"{type(e).__name__}: {e}"
            errors = agree.allgather("ckpt_restore", error, timeout_s=VERDICT_TIMEOUT_S)
            if not any(errors):
                if skipped:
                    logging.warning(
                        "Resumed from checkpoint %d: the newer ones did not restore: %s.",
                        step,
                        "; ".join(skipped),
                    )
                    self._set_aside([s for s in steps if s > step])
                return step, *restored
            if not all(errors):
                shown = "; ".join(f"process {i}: {e or 'restored'}" for i, e in enumerate(errors))
                raise CheckpointError(
                    f"Checkpoint {step} restored on some processes only ({shown[:2000]})."
                )
            why = misfit(storage.join(self.directory, str(step)), abstract_state)
            why = [*why[:-1], why[-1] + " (another model?)"] if why else [errors[0][:1000]]
            logging.warning("Skipping unreadable checkpoint %d: %s", step, "; ".join(why))
            skipped.append(f"{step} ({why[0][:300]})")
        if steps and self.is_two_tower(steps[0]):
            raise CheckpointError(
                f"The checkpoints in {self.directory} (steps {steps}) were"
                f" {self._upgrade_hint()}; then start this run again."
            )
        if steps:  # never start from scratch silently on top of a run's checkpoints
            raise CheckpointError(
                f"None of the checkpoints in {self.directory} (steps {steps}) restores into"
                " this run. Does the config match the one they were written with (model,"
                f" optimizer)? {'; '.join(skipped)[:1500]}"
            )
        return None

    def close(self) -> None:
        """Waits for in-flight saves: exiting before this loses them."""
        self.manager.wait_until_finished()
        self.manager.close()
