r"""mmjax command line.

  python -m mmjax.main --config=configs/clip_vitb.py [--workdir=DIR] [--config.x=y ...]
  python -m mmjax.main --config=configs/demo.py --config.total_steps=500

A workdir that holds a checkpoint is resumed from its latest step.

  python -m mmjax.main --mode=eval --config=configs/demo.py --workdir=DIR [--step=N]

evaluates the latest (or the named) checkpoint with every evaluator in `config.evals`.

Every mistake in what is given (a flag, a config field or value, a path, the data, a
checkpoint) ends the run before anything is compiled, or as soon as it shows, with one
line that names it and says what to do, and status 1 (mmjax/errors.py). Only a bug in
mmjax prints a traceback.
"""

import dataclasses
import logging
import os
import sys

import jax
import ml_collections
from absl import app, flags
from absl import logging as absl_logging

from mmjax import cli, errors, storage, validate
from mmjax.errors import UsageError, UserError
from mmjax.parallel import agree
from mmjax.parallel import mesh as mesh_lib

_WORKDIR = flags.DEFINE_string("workdir", "", "Run directory; default ./workdirs/<config>.")
_MODE = flags.DEFINE_enum(
    "mode", "train", ["train", "eval"], "train (or resume), or eval a checkpoint."
)
_STEP = flags.DEFINE_integer("step", None, "--mode=eval: the checkpoint step; default the latest.")
_OVERWRITE = flags.DEFINE_bool(
    "overwrite", False, "Continue a workdir whose config.json differs from --config."
)
CONFIG_HELP = "--config=PATH[:ARG] (a config file, e.g. configs/demo.py) and --config.x=y overrides"


@dataclasses.dataclass(frozen=True)
class Command:
    """A parsed command line."""

    config: ml_collections.ConfigDict
    config_flag: str
    workdir: str
    mode: str
    step: int | None
    overwrite: bool


def default_workdir(config_flag: str) -> str:
    """configs/clip_vitb.py:runlocal -> ./workdirs/clip_vitb_runlocal."""
    path, _, arg = config_flag.partition(":")
    name = os.path.splitext(os.path.basename(path))[0]
    if arg:
        name += "_" + "".join(c if c.isalnum() else "_" for c in arg)
    return storage.join("workdirs", name)


def _parse_absl(argv: list[str]) -> list[str]:
    """absl's flags (--workdir, --mode, ...; --help prints and exits) from `argv`."""
    flags.FLAGS.unparse_flags()  # a second parse in one process starts from the defaults
    try:
        return flags.FLAGS(argv)
    except flags.Error as e:
        known = f"{CONFIG_HELP}, --workdir, --mode, --step, --overwrite"
        text = str(e).replace(" ?", "?").rstrip()
        end = "" if text.endswith((".", "?")) else "."
        raise UsageError(f"{text}{end} Flags: {known}.") from None


def parse(argv: list[str]) -> Command:
    """The command line -> a `Command`; any mistake in it ends the process with one line.

    `--config` and its overrides are parsed by mmjax/cli.py (messages that name the
    field); the other flags by absl.
    """
    with errors.boundary():
        config_flag, overrides, rest = cli.split_argv(argv[1:])
        left = _parse_absl([argv[0], *rest])
        if len(left) > 1:
            raise UsageError(f"unexpected argument {left[1]!r}; flags are {CONFIG_HELP}.")
        if config_flag is None:
            raise UsageError(f"--config is required: {CONFIG_HELP}.")
        config = cli.load_file(config_flag)
        cli.apply_overrides(config, overrides)
        if _STEP.value is not None and (_MODE.value != "eval" or _STEP.value < 0):
            raise UsageError(f"--step={_STEP.value}: a checkpoint step >= 0, with --mode=eval.")
        return Command(
            config,
            config_flag,
            _WORKDIR.value or default_workdir(config_flag),
            _MODE.value,
            _STEP.value,
            _OVERWRITE.value,
        )


class _QuietLibraries(logging.Filter):
    """Keeps INFO lines from mmjax only: Orbax and Grain log every save at INFO."""

    def filter(self, record: logging.LogRecord) -> bool:
        return record.levelno >= logging.WARNING or f"{os.sep}mmjax{os.sep}" in record.pathname


def _exit(status: int) -> None:
    """Exits; in a multi-process run without waiting for the others (agree.exit_now)."""
    try:
        multi = jax.process_count() > 1
    except Exception:  # the runtime itself failed to start: nothing to wait for
        multi = False
    if multi:
        agree.exit_now(status)
    sys.exit(status)


def start_runtime(config: ml_collections.ConfigDict) -> None:
    """JAX's multi-process runtime, when the config asks for it; a failure to reach the
    coordinator or to find the cluster is the environment's, and said so."""
    validate.check_distributed(config)
    try:
        mesh_lib.maybe_initialize_distributed(config.distributed)
    except (ValueError, RuntimeError) as e:
        raise UserError(
            f"config.distributed: the multi-process runtime did not start ({type(e).__name__}:"
            f" {str(e)[:500]}). Check coordinator_address, num_processes and process_id, or"
            " set distributed.initialize=False for a single process."
        ) from e


def run_command(command: Command) -> dict:
    """Validates, then trains or evaluates: what `main` does inside its error boundary."""
    from mmjax.evals import standalone
    from mmjax.train import loop, preemption

    config = command.config
    start_runtime(config)
    # A failure in one process stops the others with its message, never leaves them hung.
    with agree.FailureWatch(ignore=(preemption.Preempted,)):
        validate.check(config, jax.device_count(), jax.process_count(), deep=True)
        validate.check_workdir(command.workdir, create=command.mode == "train")
        logging.info("Workdir: %s", storage.absolute(command.workdir))
        if command.mode == "eval":
            return standalone.evaluate(config, command.workdir, command.step)
        return loop.train(config, command.workdir, command.overwrite)


def main(command: Command) -> None:
    """Runs a parsed command (`app.run` hands over what `parse` returned)."""
    from mmjax.train import preemption

    absl_logging.get_absl_handler().addFilter(_QuietLibraries())
    with errors.boundary(exit_with=_exit, reported=(agree.ProcessFailedError,)):
        try:
            results = run_command(command)
        except preemption.Preempted as stop:
            logging.warning("%s", stop)
            _exit(preemption.PREEMPTED_EXIT_CODE)
    if command.mode == "train" and jax.process_index() == 0:
        print_summary(results, command.workdir)


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


def run(argv: list[str] | None = None) -> None:
    """Console entry point; `argv` defaults to sys.argv."""
    app.run(main, argv=argv, flags_parser=parse)


if __name__ == "__main__":
    run()
