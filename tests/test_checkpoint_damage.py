"""Damaged checkpoints: a truncated, missing or bit-flipped file, or another model's
checkpoint, is skipped with a warning naming the step and the file; the run resumes from
the newest good step, exactly, and never starts afresh silently."""

import os
import shutil

import jax
import numpy as np
import pytest

from mmjax import checkpoint_files, state, storage
from mmjax.checkpoint import Checkpointer, CheckpointError
from mmjax.data import pipeline
from mmjax.parallel import agree
from mmjax.parallel.mesh import make_mesh
from mmjax.train import loop
from tests.helpers import tiny_config

CONFIG = dict(total_steps=6, ckpt_every=2, keep_ckpts=3)


@pytest.fixture(scope="module")
def straight(tmp_path_factory) -> str:
    """A run to step 6 with checkpoints at 2, 4 and 6."""
    workdir = str(tmp_path_factory.mktemp("straight"))
    loop.train(tiny_config(**CONFIG), workdir)
    return workdir


def abstract_state(config):
    return state.build(config, make_mesh(config.mesh)).abstract


def params_at(workdir: str, step: int):
    config = tiny_config(**CONFIG)
    ckpt = Checkpointer(f"{workdir}/checkpoints", read_only=True)
    restored, _ = ckpt.restore(step, abstract_state(config), None)
    ckpt.close()
    return jax.device_get(restored.params)


def largest_array_file(step_dir: str) -> str:
    """The biggest file of array data (a bit flipped there restores silently in Orbax)."""
    files = storage.files_under(step_dir)
    return max((f for f in files if "/d/" in f), key=files.get)


def truncate(path: str) -> None:
    with open(path, "r+b") as f:
        f.truncate(os.path.getsize(path) // 2)


def flip_a_bit(path: str) -> None:
    with open(path, "r+b") as f:
        f.seek(os.path.getsize(path) // 2)
        byte = f.read(1)[0]
        f.seek(-1, os.SEEK_CUR)
        f.write(bytes([byte ^ 0x04]))


DAMAGE = {
    "truncated": (truncate, "truncated"),
    "missing": (os.remove, "missing"),
    "bit-flipped": (flip_a_bit, "content differs"),
}


@pytest.mark.parametrize("kind", list(DAMAGE))
def test_damaged_newest_checkpoint_falls_back_to_the_previous_one(straight, tmp_path, caplog, kind):
    workdir = str(tmp_path / "run")
    shutil.copytree(straight, workdir)
    step_dir = f"{workdir}/checkpoints/6"
    bad = largest_array_file(step_dir)
    damage, words = DAMAGE[kind]
    damage(f"{step_dir}/{bad}")
    ckpt = Checkpointer(f"{workdir}/checkpoints", 2, 3)
    with caplog.at_level("WARNING"):
        step, restored, _ = ckpt.restore_newest(abstract_state(tiny_config(**CONFIG)), None)
    ckpt.close()
    assert step == 4
    assert f"Skipping damaged checkpoint 6: {bad}: {words}" in caplog.text
    assert "Resumed from checkpoint 4" in caplog.text
    for a, b in zip(jax.tree.leaves(params_at(straight, 4)), jax.tree.leaves(restored.params)):
        np.testing.assert_array_equal(a, b)


def test_another_models_checkpoint_is_skipped_naming_what_does_not_fit(straight, tmp_path, caplog):
    workdir = str(tmp_path / "run")
    shutil.copytree(straight, workdir)
    shutil.rmtree(f"{workdir}/checkpoints/6")
    other = tiny_config(**CONFIG, **{"model.embed_dim": 24})  # a different projection size
    mesh = make_mesh(other.mesh)
    built = state.build(other, mesh)
    init_fn, shardings = built.init_fn, built.shardings
    data = pipeline.train_iterator(other, 0, 1)
    ckpt = Checkpointer(f"{workdir}/checkpoints", 2, 3)
    ckpt.save(6, state.init_state(init_fn, jax.random.key(0), shardings), data)
    ckpt.close()
    assert checkpoint_files.check_files(f"{workdir}/checkpoints/6") == []  # intact, just not ours
    ckpt = Checkpointer(f"{workdir}/checkpoints", 2, 3)
    with caplog.at_level("WARNING"):
        step, _, _ = ckpt.restore_newest(abstract_state(tiny_config(**CONFIG)), None)
    ckpt.close()
    assert step == 4
    misfit = "state params.image.proj.kernel: shape (32, 24) in the checkpoint, (32, 16)"
    assert f"Skipping unreadable checkpoint 6: {misfit}" in caplog.text
    assert "Resumed from checkpoint 4" in caplog.text


def test_a_corrupted_newest_checkpoint_resumes_exactly_from_the_previous(
    straight, tmp_path, caplog
):
    workdir = str(tmp_path / "run")
    shutil.copytree(straight, workdir)
    shutil.rmtree(f"{workdir}/checkpoints/6")  # as if killed between the saves of 4 and 6
    bad = largest_array_file(f"{workdir}/checkpoints/4")
    flip_a_bit(f"{workdir}/checkpoints/4/{bad}")
    with caplog.at_level("WARNING"):
        loop.train(tiny_config(**CONFIG), workdir)
    assert f"Skipping damaged checkpoint 4: {bad}: content differs" in caplog.text
    assert "Resumed from checkpoint 2" in caplog.text and "Moved checkpoint 4 aside" in caplog.text
    for a, b in zip(
        jax.tree.leaves(params_at(straight, 6)), jax.tree.leaves(params_at(workdir, 6))
    ):
        np.testing.assert_array_equal(a, b)


def as_if_two_processes(monkeypatch, others: dict) -> None:
    """agree.allgather as if a second process answered `others[name](its call number)`
    (by default the same as this one)."""
    calls: dict[str, int] = {}

    def allgather(name, value, timeout_s=None):
        calls[name] = calls.get(name, 0) + 1
        return [value, others[name](calls[name]) if name in others else value]

    monkeypatch.setattr(agree, "allgather", allgather)


def restore(workdir: str):
    ckpt = Checkpointer(f"{workdir}/checkpoints", read_only=True)
    try:
        return ckpt.restore_newest(abstract_state(tiny_config(**CONFIG)), None)
    finally:
        ckpt.close()


def test_processes_restore_the_newest_step_all_of_them_see(straight, monkeypatch, caplog):
    as_if_two_processes(monkeypatch, {"ckpt_steps": lambda _: [2, 4]})
    with caplog.at_level("WARNING"):
        assert restore(straight)[0] == 4
    assert "process 0: [2, 4, 6]; process 1: [2, 4]" in caplog.text


def test_processes_that_see_no_common_step_stop_with_each_ones_view(straight, monkeypatch):
    as_if_two_processes(monkeypatch, {"ckpt_steps": lambda _: [1]})
    with pytest.raises(CheckpointError, match=r"process 0: \[2, 4, 6\]; process 1: \[1\]"):
        restore(straight)


def test_a_step_one_process_finds_damaged_is_skipped_by_all(straight, monkeypatch, caplog):
    as_if_two_processes(monkeypatch, {"ckpt_check": lambda n: ["state/x: missing"] * (n == 1)})
    with caplog.at_level("WARNING"):
        assert restore(straight)[0] == 4
    assert "Skipping damaged checkpoint 6: state/x: missing" in caplog.text


def test_a_step_restored_by_some_processes_only_stops_all(straight, monkeypatch):
    as_if_two_processes(monkeypatch, {"ckpt_restore": lambda _: "OSError: boom"})
    with pytest.raises(CheckpointError, match=r"process 0: restored; process 1: OSError: boom"):
        restore(straight)
