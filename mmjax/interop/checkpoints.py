"""Converted weights in and out of mmjax workdirs: configs, train-state checkpoints.

An import becomes what a run at step 0 would hold: `checkpoints/0/state`, a full
`TrainState` (imported parameters, a fresh optimizer state) under the layout `Checkpointer`
writes, so `python -m mmjax.main` restores it and trains on. It has no "data" item: there
is no iterator position yet, and the loop starts the data from the beginning.
"""

import json
import logging
from collections.abc import Mapping
from typing import Any

import flax.linen as nn
import jax
import ml_collections
import numpy as np
import orbax.checkpoint as ocp

from mmjax import models, state, storage
from mmjax.checkpoint import UPGRADE_HINT, Checkpointer
from mmjax.data.modalities import example_specs
from mmjax.interop import config_json, two_tower
from mmjax.parallel import mesh as mesh_lib
from mmjax.parallel import sharding

Params = dict[str, Any]


def set_fields(config: ml_collections.ConfigDict, fields: Mapping[str, Any]) -> None:
    """Sets dotted fields ("model.towers.image.variant"); an unknown field fails (locked)."""
    for key, value in fields.items():
        *parents, leaf = key.split(".")
        target = config
        for p in parents:
            target = target[p]
        target[leaf] = value


def config_from_json(path: str) -> ml_collections.ConfigDict:
    """A run's `config.json` as a ConfigDict: `config.base()` with the saved values set.

    Fields the saved run did not have keep their defaults, which reproduce the behaviour
    of the code before those fields existed. A config of the two-tower mmjax (before
    multi-tower models) fails, saying how to upgrade its workdir.
    """
    saved = json.loads(storage.read_text(path))
    if two_tower.is_two_tower_config(saved):
        workdir = storage.parent(storage.absolute(path))
        raise ValueError(f"{path} was " + UPGRADE_HINT.format(workdir=workdir) + ".")
    config, ignored = config_json.config_from_dict(saved)
    for field in ignored:
        logging.warning("Ignoring %s from the saved config: not a field here.", field)
    return config


CONFIG_TEMPLATE = '''r"""mmjax config for open_clip weights imported by tools/convert_open_clip.py.

Weights: {source}
The model fields below rebuild that architecture exactly; the other fields are
mmjax.config.base() defaults, with a fine-tuning learning rate. Override training fields
on the command line (--config.x=y). Do not change the model fields, or switch
optim.grad_clip between zero and non-zero: the checkpoint would no longer fit.

  python -m mmjax.main --config={config_path} \\
      --workdir={workdir} --config.data.path=...
"""

from mmjax import config as mmconfig


def get_config(arg: str | None = None):
    mmconfig.parse_arg(arg)  # no variants
    c = mmconfig.base()
{assignments}
    c.optim.lr = {lr!r}  # fine-tuning: base()'s 5e-4 is a from-scratch rate
    return mmconfig.lock(c)
'''


def write_config_file(
    path: str, fields: Mapping[str, Any], source: str, workdir: str, lr: float = 1e-5
) -> None:
    """A Python config (`--config=path`) that sets `fields` on `config.base()`."""
    literal = lambda v: json.dumps(v) if isinstance(v, str) else repr(v)
    lines = [f"    c.{k} = {literal(v)}" for k, v in fields.items() if v is not None]
    text = CONFIG_TEMPLATE.format(
        source=source,
        config_path=path,
        workdir=workdir,
        assignments="\n".join(lines),
        lr=lr,
    )
    storage.write_text(path, text)


def _ckpt_dir(workdir: str) -> str:
    return storage.join(storage.absolute(workdir), "checkpoints")


def _check_tree(params: Params, abstract: Params) -> None:
    """Fails, naming paths, unless `params` has exactly the model's parameter tree."""
    got = {jax.tree_util.keystr(k): np.shape(v) for k, v in jax.tree.leaves_with_path(params)}
    want = {jax.tree_util.keystr(k): v.shape for k, v in jax.tree.leaves_with_path(abstract)}
    problems = [f"missing {k}" for k in sorted(set(want) - set(got))]
    problems += [f"unexpected {k}" for k in sorted(set(got) - set(want))]
    problems += [
        f"{k}: shape {got[k]}, model {want[k]}"
        for k in sorted(set(got) & set(want))
        if got[k] != want[k]
    ]
    if problems:
        raise ValueError("Converted parameters do not fit the model: " + "; ".join(problems[:8]))


def save_train_state(config: ml_collections.ConfigDict, params: Params, workdir: str) -> int:
    """Writes `params` with a fresh optimizer state as step 0 of `workdir`; returns 0.

    The state is built by the run's own init function with the parameters swapped in,
    so every other field (step, counters, optimizer moments) is what a new run starts
    with. Refuses a workdir that already holds checkpoints.
    """
    manager = ocp.CheckpointManager(
        _ckpt_dir(workdir),
        options=ocp.CheckpointManagerOptions(create=True, enable_async_checkpointing=False),
    )
    if manager.latest_step() is not None:
        raise FileExistsError(f"{workdir} already holds checkpoints; use a new workdir.")
    mesh = mesh_lib.make_mesh(config.mesh)
    with jax.set_mesh(mesh), nn.logical_axis_rules(sharding.as_rules(config.mesh.rules)):
        built = state.build(config, mesh)
        tx, shardings = built.tx, built.shardings
        _check_tree(params, built.abstract.params)
        placed = jax.device_put(params, shardings.params)

        def fresh(params: Params) -> state.TrainState:
            return state.fresh_state(params, tx, built.frozen, state.uses_ema(config))

        train_state = jax.jit(fresh, out_shardings=shardings)(placed)
    manager.save(0, args=ocp.args.Composite(state=ocp.args.StandardSave(train_state)), force=True)
    manager.wait_until_finished()
    manager.close()
    return 0


def restore_params(
    config: ml_collections.ConfigDict, workdir: str, step: int | None = None
) -> tuple[Params, int]:
    """(parameters as numpy, step) from `workdir`'s latest checkpoint or `step`.

    Reads only the parameters (not the optimizer state), onto the host, whatever mesh
    wrote them.
    """
    ckpts = Checkpointer(_ckpt_dir(workdir), read_only=True)  # a run may be saving there
    step = ckpts.latest_step() if step is None else step
    if step is None:
        raise FileNotFoundError(f"No checkpoint in {_ckpt_dir(workdir)}.")
    model = models.build_model(config.model, config.objectives)
    inputs = state.dummy_inputs(example_specs(config))
    abstract = jax.eval_shape(lambda: model.init(jax.random.key(0), inputs)["params"])
    params = ckpts.restore_params(step, state.strip_boxes(abstract), as_numpy=True)
    ckpts.close()
    return params, step
