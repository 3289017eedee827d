"""Frozen and locked parameters (LiT): bitwise unchanged by training, no optimizer state,
less step memory; a locked tower in bfloat16; initialising a tower from another run."""

import jax
import numpy as np
import orbax.checkpoint as ocp
import pytest

from mmjax import state
from mmjax.checkpoint import Checkpointer
from mmjax.parallel.mesh import make_mesh
from tests.helpers import tiny_config
from tests.train_helpers import compiled_step, train_states, tree_bytes

LOCKED = {"model.towers.image.lock": True}


def changed(a, b) -> dict[str, bool]:
    """{path: whether any entry differs}."""
    flat = dict(jax.tree_util.tree_leaves_with_path(b))
    return {
        jax.tree_util.keystr(p): bool(np.any(np.asarray(x) != np.asarray(flat[p])))
        for p, x in jax.tree_util.tree_leaves_with_path(a)
    }


# Big enough a batch that activations dominate the step's temporary memory.
BIG = {"batch_size": 64, "data.modalities.image.size": 32}


@pytest.fixture(scope="module")
def locked():
    config = tiny_config(**BIG, **LOCKED)
    return config, compiled_step(config)


def test_locked_tower_is_bitwise_unchanged_and_holds_no_optimizer_state(locked):
    config, compiled = locked
    first, *_, last = train_states(config, 3, compiled)
    moved = changed(first.params, last.params)
    image = {k: v for k, v in moved.items() if k.startswith("['image']")}
    assert image and not any(image.values()), [k for k, v in image.items() if v]
    assert all(v for k, v in moved.items() if k.startswith("['text']") and "kernel" in k)
    # Adam keeps two moments per trainable parameter, none for the locked tower.
    n_image = state.count_params(first.params["image"])
    n_trainable = state.count_params(first.params) - n_image
    assert tree_bytes(last.opt_state, floats=True) == 4 * 2 * n_trainable
    unlocked = tiny_config(**BIG)
    full = state.build(unlocked, make_mesh(unlocked.mesh)).abstract.opt_state
    full_bytes = sum(x.size * x.dtype.itemsize for x in jax.tree.leaves(full))
    assert full_bytes - tree_bytes(last.opt_state) == 4 * 2 * n_image


def test_locking_a_tower_lowers_step_memory(locked):
    _, _, trained = compiled_step(tiny_config(**BIG))
    memory = {
        "trained": trained.memory_analysis().temp_size_in_bytes,
        "locked": locked[1][2].memory_analysis().temp_size_in_bytes,
    }
    print(f"temp bytes per device: {memory}")
    assert memory["locked"] < 0.75 * memory["trained"], memory


def test_regex_frozen_parameters_are_unchanged():
    config = tiny_config(**{"optim.freeze": (r"^objectives/", r"^text/stem/")})
    first, _, last = train_states(config, 2)
    moved = changed(first.params, last.params)
    frozen = [k for k in moved if k.startswith("['objectives']") or "['text']['stem']" in k]
    assert len(frozen) == 3 and not any(moved[k] for k in frozen)  # t, pos_embed, token_embed
    assert moved["['image']['proj']['kernel']"]


def test_locked_tower_in_bfloat16_trains_the_other():
    config = tiny_config(**LOCKED, **{"model.towers.image.dtype": "bfloat16"})
    first, _, last = train_states(config, 2)
    assert last.skipped == 0
    moved = changed(first.params, last.params)
    assert not any(v for k, v in moved.items() if k.startswith("['image']"))
    assert moved["['text']['proj']['kernel']"]


def test_init_takes_the_image_tower_from_another_run(tmp_path):
    """config.init: a run (seed 1) saved; a LiT run (seed 0) starts with its image tower
    and its own text tower, fresh optimizer moments and an EMA of the result."""
    other = tiny_config(seed=1)
    mesh = make_mesh(other.mesh)
    with jax.set_mesh(mesh):
        built = state.build(other, mesh)
        saved = state.init_state(built.init_fn, jax.random.key(1), built.shardings)
        ckpt = Checkpointer(str(tmp_path / "checkpoints"), 1, 1)
        ckpt.manager.save(7, args=ocp.args.Composite(state=ocp.args.StandardSave(saved)))
        ckpt.close()
        lit = tiny_config(
            **LOCKED,
            **{"init.workdir": str(tmp_path), "init.params": ("^image/",), "ema.decay": 0.9},
        )
        built = state.build(lit, mesh)
        fresh = state.init_state(built.init_fn, jax.random.key(0), built.shardings)
        started = jax.device_get(state.init_from(lit, built, fresh))
    saved, fresh = jax.device_get(saved), jax.device_get(fresh)
    for part, source in (("image", saved), ("text", fresh), ("objectives", fresh)):
        for x, y in zip(
            jax.tree.leaves(started.params[part]), jax.tree.leaves(source.params[part])
        ):
            np.testing.assert_array_equal(x, y, err_msg=part)
    assert not np.array_equal(
        saved.params["text"]["proj"]["kernel"], started.params["text"]["proj"]["kernel"]
    )
    np.testing.assert_array_equal(
        started.ema["text"]["proj"]["kernel"], started.params["text"]["proj"]["kernel"]
    )
    assert "image" not in started.ema or not jax.tree.leaves(started.ema["image"])  # locked
    assert tree_bytes(started.opt_state, floats=True) == tree_bytes(fresh.opt_state, floats=True)
