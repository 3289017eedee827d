r"""Upgrades a workdir written by mmjax before multi-tower models, in place.

  python tools/upgrade_checkpoint.py --workdir=workdirs/clip_vitb [--config=configs/x.py]
  python -m mmjax.main --config=configs/x.py --workdir=workdirs/clip_vitb   # resumes

Rewrites the train state of every checkpoint step (the parameters and the optimizer
moments, which mirror them) from the two-tower tree to the multi-tower one, checks that
each step restores into the run's new train state, and rewrites `config.json` from the
old fields (`model.image.*`, `loss.name`, `data.image_size`, ...) to the new ones
(`model.towers.image.*`, `objectives.image_text.loss`, `data.modalities.image.size`,
...). Arrays move, none changes, except a logit scale t above log(max_scale), which is
lowered to it (the old model capped exp(t) there, so what the model computes is the same).
The old state items are kept as `checkpoints/<step>/state.two_tower` and the old config as
`config.two_tower.json` (`--nokeep_old` deletes them once the new ones restore); the data
iterator positions are kept as they are. Steps already in the new layout are skipped.

`--config` (path[:arg], with `--config.x=y` overrides) is the config the run goes on with;
default: the workdir's `config.json`, upgraded. Stop any run in the workdir first.
"""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from absl import app, flags, logging

from mmjax import cli, errors
from mmjax.errors import UsageError
from mmjax.interop import upgrade

_WORKDIR = flags.DEFINE_string("workdir", "", "The run directory to upgrade.")
_KEEP_OLD = flags.DEFINE_bool(
    "keep_old", True, "Keep the old state items and config.json beside the new ones."
)
# The run's config, --config=PATH[:ARG] and --config.x=y (mmjax/cli.py); default
# WORKDIR/config.json, upgraded.
_config = None


def parse(argv: list[str]) -> list[str]:
    """`--config` by mmjax/cli.py, the rest by absl; a mistake ends in one line."""
    global _config
    with errors.boundary():
        _config, left = cli.parse_tool_argv(argv)
        if len(left) > 1 or not _WORKDIR.value:
            raise UsageError("usage: upgrade_checkpoint.py --workdir=DIR [--config=...]")
        return left


def main(argv: list[str]) -> None:
    logging.set_verbosity(logging.ERROR)  # Orbax warns about every read-only open
    # The upgrade's own refusals: no config.json, no checkpoint, a kept old state in the way.
    with errors.boundary(), errors.refusals("upgrade", "mmjax", "interop"):
        r = upgrade.upgrade_workdir(_WORKDIR.value, _config, _KEEP_OLD.value)
    lines = [f"Upgraded steps {r.upgraded} of {_WORKDIR.value}; each restores into the run."]
    if r.skipped:
        lines.append(f"Already in the new layout: steps {r.skipped}.")
    if r.clamped:
        lines.append(f"t was above log(max_scale) in steps {r.clamped}: lowered to it.")
    lines.append(f"config.json: {r.config}.")
    if r.dropped:
        lines.append(f"Old config fields with no place now, dropped: {r.dropped}.")
    print("\n".join(lines))


if __name__ == "__main__":
    app.run(main, flags_parser=parse)
