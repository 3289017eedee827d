r"""mmjax command line.

  python -m mmjax.main --config=configs/clip_vitb.py [--workdir=DIR] [--config.x=y ...]
  python -m mmjax.main --config=configs/demo.py --config.total_steps=500

A workdir that holds a checkpoint is resumed from its latest step.
"""

import logging
import os

from absl import app, flags
from absl import logging as absl_logging
from ml_collections import config_flags

from mmjax.parallel import mesh as mesh_lib

_CONFIG = config_flags.DEFINE_config_file("config", None, "Config file (path[:arg]).")
_WORKDIR = flags.DEFINE_string("workdir", "", "Run directory; default ./workdirs/<config>.")
_MODE = flags.DEFINE_enum("mode", "train", ["train"], "What to do.")


def default_workdir(config_flag: str) -> str:
    """configs/clip_vitb.py:runlocal -> ./workdirs/clip_vitb_runlocal."""
    path, _, arg = config_flag.partition(":")
    name = os.path.splitext(os.path.basename(path))[0]
    if arg:
        name += "_" + "".join(c if c.isalnum() else "_" for c in arg)
    return os.path.join("workdirs", name)


class _QuietLibraries(logging.Filter):
    """Keeps INFO lines from mmjax only: Orbax and Grain log every save at INFO."""

    def filter(self, record: logging.LogRecord) -> bool:
        return record.levelno >= logging.WARNING or f"{os.sep}mmjax{os.sep}" in record.pathname


def main(argv: list[str]) -> None:
    del argv
    absl_logging.get_absl_handler().addFilter(_QuietLibraries())
    config = _CONFIG.value
    mesh_lib.maybe_initialize_distributed(config.distributed)
    from mmjax.train import loop  # after distributed init: imports touch no backend before

    workdir = _WORKDIR.value or default_workdir(
        config_flags.get_config_filename(flags.FLAGS["config"])
    )
    logging.info("Workdir: %s", os.path.abspath(workdir))
    loop.train(config, workdir)


def run() -> None:
    """Console entry point."""
    flags.mark_flag_as_required("config")
    app.run(main)


if __name__ == "__main__":
    run()
