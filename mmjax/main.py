r"""mmjax command line.

  python -m mmjax.main --config=configs/clip_vitb.py [--workdir=DIR] [--config.x=y ...]
  python -m mmjax.main --config=configs/demo.py --config.total_steps=500

A workdir that holds a checkpoint is resumed from its latest step.

  python -m mmjax.main --mode=eval --config=configs/demo.py --workdir=DIR [--step=N]

evaluates the latest (or the named) checkpoint with every evaluator in `config.evals`.
"""

import logging
import os
import sys

import jax
from absl import app, flags
from absl import logging as absl_logging
from ml_collections import config_flags

from mmjax import checkpoint, storage
from mmjax import config as config_lib
from mmjax import workdir as workdir_lib
from mmjax.evals import standalone
from mmjax.parallel import agree
from mmjax.parallel import mesh as mesh_lib
from mmjax.train import guard, loop, memory, preemption

_CONFIG = config_flags.DEFINE_config_file("config", None, "Config file (path[:arg]).")
_WORKDIR = flags.DEFINE_string("workdir", "", "Run directory; default ./workdirs/<config>.")
_MODE = flags.DEFINE_enum(
    "mode", "train", ["train", "eval"], "train (or resume), or eval a checkpoint."
)
_STEP = flags.DEFINE_integer("step", None, "--mode=eval: the checkpoint step; default the latest.")
_OVERWRITE = flags.DEFINE_bool(
    "overwrite", False, "Continue a workdir whose config.json differs from --config."
)

# Failures with a message that says what to do: printed without a traceback.
ACTIONABLE = (
    agree.ProcessFailedError,
    checkpoint.CheckpointError,
    config_lib.ConfigError,
    workdir_lib.WorkdirConfigError,
    guard.NonFiniteError,
    memory.OutOfMemoryError,
)


def default_workdir(config_flag: str) -> str:
    """configs/clip_vitb.py:runlocal -> ./workdirs/clip_vitb_runlocal."""
    path, _, arg = config_flag.partition(":")
    name = os.path.splitext(os.path.basename(path))[0]
    if arg:
        name += "_" + "".join(c if c.isalnum() else "_" for c in arg)
    return storage.join("workdirs", name)


class _QuietLibraries(logging.Filter):
    """Keeps INFO lines from mmjax only: Orbax and Grain log every save at INFO."""

    def filter(self, record: logging.LogRecord) -> bool:
        return record.levelno >= logging.WARNING or f"{os.sep}mmjax{os.sep}" in record.pathname


def _fail() -> None:
    """An unexpected error: its traceback, and in a multi-process run an exit that does
    not wait for the other processes (see agree.exit_now)."""
    if jax.process_count() == 1:
        raise  # the exception the caller is handling
    logging.exception("Failed:")
    agree.exit_now(1)


def main(argv: list[str]) -> None:
    del argv
    absl_logging.get_absl_handler().addFilter(_QuietLibraries())
    config = _CONFIG.value
    mesh_lib.maybe_initialize_distributed(config.distributed)  # before any backend use

    workdir = _WORKDIR.value or default_workdir(
        config_flags.get_config_filename(flags.FLAGS["config"])
    )
    logging.info("Workdir: %s", storage.absolute(workdir))
    # A failure in one process stops the others with its message, never leaves them hung.
    watch = agree.FailureWatch(ignore=(preemption.Preempted,))
    if _MODE.value == "eval":
        try:
            with watch:
                standalone.evaluate(config, workdir, _STEP.value)
        except (standalone.NoCheckpointError, *ACTIONABLE) as error:
            logging.error("%s", error)
            agree.exit_now(1)
        except Exception:
            _fail()
        return
    try:
        with watch:
            results = loop.train(config, workdir, _OVERWRITE.value)
    except preemption.Preempted as stop:
        logging.warning("%s", stop)
        sys.exit(preemption.PREEMPTED_EXIT_CODE)
    except ACTIONABLE as error:
        logging.error("%s", error)
        agree.exit_now(1)
    except Exception:
        _fail()
    if jax.process_index() == 0:
        print_summary(results, workdir)


def print_summary(results: dict[str, float], workdir: str) -> None:
    """The last zero-shot results of each zero-shot evaluator, one line each."""
    for key in (k for k in results if k.endswith("/top1") and k.startswith("zeroshot")):
        name = key[: -len("/top1")]
        what = name.removeprefix("zeroshot").lstrip("_")
        print(
            f"Zero-shot top-1 on the held-out split{f' ({what})' if what else ''}:"
            f" {100 * results[key]:.1f}%"
            f" (top-5 {100 * results[name + '/top5']:.1f}%). Workdir: {workdir}",
            flush=True,
        )


def run() -> None:
    """Console entry point."""
    flags.mark_flag_as_required("config")
    app.run(main)


if __name__ == "__main__":
    run()
