"""Upgrading a workdir of the two-tower mmjax in place: every checkpoint and config.json.

Each step's "state" item is read as host arrays, whatever mesh wrote it; its parameter
trees (the parameters and the optimizer's moments, which mirror them) move to the
multi-tower layout (`two_tower.py`); the result is written beside the old item, swapped in,
and restored into the new run's train state (the shapes and tree of its config) to prove
that it fits. The old item is kept as `<step>/state.two_tower` unless `keep_old=False`.
The data iterator items are left as they were. Steps already in the new layout are
skipped, so an upgrade that was cut short can be run again.

Run it while nothing trains in the workdir.
"""

import dataclasses
import json
from typing import Any

import flax.linen as nn
import jax
import ml_collections
import numpy as np
import orbax.checkpoint as ocp
from etils import epath

from mmjax import checkpoint_files, state
from mmjax.checkpoint import Checkpointer
from mmjax.interop import checkpoints, two_tower
from mmjax.parallel import mesh as mesh_lib
from mmjax.parallel import sharding

OLD_SUFFIX = ".two_tower"  # the old state item and config.json, kept beside the new


@dataclasses.dataclass
class Report:
    """What `upgrade_workdir` did, by step."""

    upgraded: list[int] = dataclasses.field(default_factory=list)
    skipped: list[int] = dataclasses.field(default_factory=list)  # already multi-tower
    clamped: list[int] = dataclasses.field(default_factory=list)  # t lowered to the cap
    dropped: list[str] = dataclasses.field(default_factory=list)  # old fields with no place
    config: str = ""  # what happened to config.json


def read_state(directory: epath.Path) -> Any:
    """A saved "state" item as nested dicts and lists of numpy arrays, whatever wrote it."""
    checkpointer = ocp.PyTreeCheckpointer()
    tree = checkpointer.metadata(directory).item_metadata.tree
    args = jax.tree.map(lambda _: ocp.RestoreArgs(restore_type=np.ndarray), tree)
    return checkpointer.restore(directory, args=ocp.args.PyTreeRestore(restore_args=args))


def write_state(directory: epath.Path, tree: Any) -> None:
    ocp.Checkpointer(ocp.StandardCheckpointHandler()).save(
        directory, args=ocp.args.StandardSave(tree)
    )


def image_text_term(config: ml_collections.ConfigDict) -> str:
    """The term that takes the two-tower model's t and b: the one between image and text."""
    terms = [n for n, t in config.objectives.items() if sorted(t.modalities) == ["image", "text"]]
    if len(terms) != 1:
        raise ValueError(
            "The two-tower model's logit scale belongs to one term between 'image' and 'text';"
            f" config.objectives has {len(terms)} such terms ({terms})."
        )
    return terms[0]


def upgraded_config(path: epath.Path) -> tuple[ml_collections.ConfigDict, list[str] | None]:
    """(a saved config.json in the new fields, the saved fields it dropped; None if it
    already had the new fields)."""
    saved = json.loads(path.read_text())
    if two_tower.is_two_tower_config(saved):
        return two_tower.upgrade_config(saved)
    return checkpoints.config_from_json(str(path)), None


def _old(item: epath.Path) -> epath.Path:
    return item.parent / (item.name + OLD_SUFFIX)


def upgrade_step(step_dir: epath.Path, term: str, max_scale: float) -> tuple[bool, bool]:
    """Writes one step's state item in the new layout, the old one kept beside it.

    Returns (whether it was upgraded: False if already multi-tower, whether t was
    lowered to the cap).
    """
    item = step_dir / "state"
    tree = read_state(item)
    if not two_tower.is_two_tower_params(tree["params"]):
        return False, False
    damaged = checkpoint_files.check_files(str(step_dir))
    if damaged:
        raise ValueError(
            f"Checkpoint {step_dir} is damaged ({'; '.join(damaged[:3])}): not upgraded."
        )
    if _old(item).exists():
        raise FileExistsError(f"{_old(item)} exists: move it away, then run the upgrade again.")
    new = two_tower.upgrade_tree(tree, term)
    clamped = two_tower.clamp_scale(new["params"], term, max_scale)
    staging = step_dir / "state.upgrading"
    if staging.exists():  # left by an upgrade that was cut short
        staging.rmtree()
    write_state(staging, new)
    sums = step_dir / checkpoint_files.CHECKSUMS
    if sums.exists():  # the old item's record, kept beside it for a rollback
        sums.rename(_old(sums))
    item.rename(_old(item))
    staging.rename(item)
    return True, clamped


def _undo_step(step_dir: epath.Path) -> None:
    """Puts an upgraded step back as it was: the old state item and its checksums."""
    item, sums = step_dir / "state", step_dir / checkpoint_files.CHECKSUMS
    item.rmtree()
    _old(item).rename(item)
    if _old(sums).exists():
        _old(sums).replace(sums)


def _verify(config: ml_collections.ConfigDict, ckpt_dir: epath.Path, steps: list[int]) -> None:
    """Restores each step into the train state of `config`: fails unless it fits exactly."""
    mesh = mesh_lib.make_mesh(config.mesh)
    with jax.set_mesh(mesh), nn.logical_axis_rules(sharding.as_rules(config.mesh.rules)):
        abstract = state.build(config, mesh).abstract
        reader = Checkpointer(str(ckpt_dir), read_only=True)
        try:
            for step in steps:
                reader.restore(step, abstract, None)
        finally:
            reader.close()


def upgrade_workdir(
    workdir: str, config: ml_collections.ConfigDict | None = None, keep_old: bool = True
) -> Report:
    """Upgrades every checkpoint of `workdir` and its config.json (see the module doc).

    `config`: the config the run goes on with, in the new fields; default: the
    workdir's config.json, upgraded. If a step does not then restore into that run's
    train state, every upgraded step is put back as it was, and the error raised.
    """
    root = epath.Path(workdir)
    ckpt_dir, json_path = root / "checkpoints", root / "config.json"
    saved, dropped = upgraded_config(json_path) if json_path.exists() else (None, None)
    run_config = config if config is not None else saved
    if run_config is None:
        raise FileNotFoundError(f"No {json_path}: pass the run's config with --config.")
    term = image_text_term(run_config)
    reader = Checkpointer(str(ckpt_dir), read_only=True)
    steps = reader.all_steps()
    reader.close()
    if not steps:
        raise FileNotFoundError(f"No checkpoint in {ckpt_dir}.")

    report = Report()
    for step in steps:
        done, clamped = upgrade_step(
            ckpt_dir / str(step), term, run_config.objectives[term].max_scale
        )
        (report.upgraded if done else report.skipped).append(step)
        if clamped:
            report.clamped.append(step)
    try:
        _verify(run_config, ckpt_dir, steps)
    except Exception:
        for step in report.upgraded:  # back to the old items: nothing half done
            _undo_step(ckpt_dir / str(step))
        raise
    if not keep_old:
        for step in report.upgraded:
            _old(ckpt_dir / str(step) / "state").rmtree()
    for step in report.upgraded:  # checksums of the step as it now is, where it had them
        old_sums = _old(ckpt_dir / str(step) / checkpoint_files.CHECKSUMS)
        if old_sums.exists():
            if not keep_old:
                old_sums.unlink()
            checkpoint_files.write_checksums(str(ckpt_dir / str(step)))
    if dropped is not None:
        json_path.rename(root / f"config{OLD_SUFFIX}.json")
        json_path.write_text(saved.to_json_best_effort(indent=2, sort_keys=True))
        report.config = f"rewritten in the new fields (the old one kept as config{OLD_SUFFIX}.json)"
        report.dropped = dropped
    else:
        report.config = "unchanged" if json_path.exists() else "none in the workdir"
    return report
