"""The workdir (local or a bucket) exists or can be made, and takes a file."""

from mmjax.errors import UserError


class WorkdirError(UserError, OSError):
    """A workdir that cannot be used: missing (evaluation), or not writable."""


def check_workdir(workdir: str, create: bool = True) -> None:
    """The workdir (local or a bucket) exists, or is created when `create`, and takes a
    file: a probe written and removed by each process, so that an unwritable folder or
    an unreachable bucket fails now, not at the first checkpoint."""
    import os

    import jax

    from mmjax import storage

    try:
        if not storage.isdir(workdir):
            if not create:
                raise WorkdirError(
                    f"--workdir={workdir}: no such folder ({storage.absolute(workdir)}). Give"
                    " the workdir of a run, which holds its checkpoints/."
                )
            storage.makedirs(workdir)
        probe = storage.join(workdir, f".mmjax-probe-{jax.process_index()}-{os.getpid()}")
        storage.write_text(probe, "")
        storage.remove(probe)
    except WorkdirError:
        raise
    except Exception as e:
        raise WorkdirError(
            f"--workdir={workdir}: cannot write there ({type(e).__name__}: {str(e)[:300]})."
            " Use a folder (or bucket) this process can write to, or check its credentials."
        ) from e
