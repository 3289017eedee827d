"""Reliability: non-finite guard, SIGTERM, interrupted saves, elastic restore, workdir safety."""

import json
import os
import signal
import subprocess
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from mmjax import losses, workdir
from mmjax import state as state_lib
from mmjax.checkpoint import Checkpointer, CheckpointError
from mmjax.losses.registry import LOSSES
from mmjax.train import guard, loop
from tests.helpers import REPO, cli_cache, cli_env, run_cli, tiny_config


def saved(workdir_path, config, step=None):
    mesh = jax.make_mesh((1, 1, 1), ("data", "fsdp", "tensor"), devices=jax.devices()[:1])
    ckpt = Checkpointer(f"{workdir_path}/checkpoints", 1, 1)
    abstract = state_lib.build(config, mesh).abstract
    state, _ = ckpt.restore(step or ckpt.latest_step(), abstract, None)
    ckpt.close()
    return jax.device_get(state)


# A loss that is always NaN, to exercise the guard inside the real loop.
@LOSSES.register("test_always_nan")
def _always_nan(x, y, scale, bias, *, axis_name):
    loss, metrics = losses.LOSSES.get("softmax")(x, y, scale, bias, axis_name=axis_name)
    return loss * jnp.nan, metrics


def logged_lr(path) -> dict[int, list[float]]:
    """step -> the learning rates logged for it, in order (a resumed step appears twice)."""
    out: dict[int, list[float]] = {}
    for r in map(json.loads, (path / "metrics.jsonl").read_text().splitlines()):
        if "lr" in r:
            out.setdefault(r["step"], []).append(r["lr"])
    return out


def test_nonfinite_steps_are_skipped_then_the_run_stops(tmp_path):
    good = tiny_config(total_steps=8, ckpt_every=2, log_every=1)
    loop.train(tiny_config(total_steps=8, ckpt_every=2, log_every=1, stop_at_step=2), str(tmp_path))
    before = saved(tmp_path, good, 2)
    bad = tiny_config(total_steps=8, ckpt_every=2, log_every=1, max_nonfinite_in_a_row=3)
    bad.objectives.image_text.loss = "test_always_nan"
    with pytest.raises(guard.NonFiniteError, match=r"Steps 3\.\.5 \(3 in a row\).*checkpoints/4"):
        loop.train(bad, str(tmp_path), overwrite=True)
    # The checkpoint written during the skipped steps holds the step-2 parameters.
    after = saved(tmp_path, good, 4)
    for a, b in zip(jax.tree.leaves(before.params), jax.tree.leaves(after.params)):
        np.testing.assert_array_equal(a, b)
    assert int(after.skipped) == 2 and int(after.skipped_in_a_row) == 2 and int(after.step) == 4
    records = [json.loads(x) for x in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert records[-1]["skipped"] >= 2

    # The logged learning rate is the applied one: none (0) on a skipped step; after the
    # restart on good data the schedule stands where the optimizer's count does, two
    # updates behind the step, so step i logs what an uninterrupted run logs at i - 2.
    loop.train(good, str(tmp_path), overwrite=True)
    loop.train(good, str(tmp_path / "straight"))
    lr, straight = logged_lr(tmp_path), logged_lr(tmp_path / "straight")
    assert lr[3][0] == lr[4][0] == 0.0 and straight[3][0] > 0.0
    for step in range(5, 9):
        assert lr[step][-1] == straight[step - 2][0], step
    assert lr[8][-1] != straight[8][0]  # the schedule has moved on: the check can fail


def test_workdir_with_another_config_is_refused_unless_overwrite(tmp_path):
    config = tiny_config(total_steps=2)
    loop.train(config, str(tmp_path))
    changed = tiny_config(total_steps=2, **{"optim.lr": 0.5})
    with pytest.raises(workdir.WorkdirConfigError, match=r"optim.lr: 0.001 -> 0.5.*--overwrite"):
        loop.train(changed, str(tmp_path))
    # Operational fields may change: more frequent logging is the same run.
    workdir.prepare(str(tmp_path), tiny_config(total_steps=2, log_every=1))
    loop.train(changed, str(tmp_path), overwrite=True)
    kept = [f for f in os.listdir(tmp_path) if f.startswith("config.") and f != "config.json"]
    assert len(kept) == 1
    assert json.loads((tmp_path / kept[0]).read_text())["optim"]["lr"] == 0.001
    assert json.loads((tmp_path / "config.json").read_text())["optim"]["lr"] == 0.5


def test_incomplete_checkpoint_is_ignored_and_resume_is_exact(tmp_path, caplog):
    config = tiny_config(total_steps=4, ckpt_every=2)
    loop.train(config, str(tmp_path / "straight"))
    loop.train(tiny_config(total_steps=4, ckpt_every=2, stop_at_step=2), str(tmp_path / "run"))
    # What a SIGKILL during an asynchronous save of step 3 leaves behind.
    partial = tmp_path / "run" / "checkpoints" / "3.orbax-checkpoint-tmp-1234"
    (partial / "state").mkdir(parents=True)
    (partial / "state" / "garbage").write_bytes(b"\0" * 100)
    # And what a kill during the deletion of an old checkpoint can leave: a step folder
    # with part of its contents (here made the newest, the worst case).
    (tmp_path / "run" / "checkpoints" / "3" / "state").mkdir(parents=True)
    with caplog.at_level("WARNING"):
        loop.train(config, str(tmp_path / "run"))
    assert "Ignoring incomplete checkpoint" in caplog.text
    assert "Skipping unreadable checkpoint 3" in caplog.text
    a, b = saved(tmp_path / "straight", config), saved(tmp_path / "run", config)
    for x, y in zip(jax.tree.leaves(a.params), jax.tree.leaves(b.params)):
        np.testing.assert_array_equal(x, y)


DEMO = [
    "--config.schedule.warmup_steps=1",
    "--config.log_every=1",
    "--config.evals.zeroshot.every=0",
]


def losses_by_step(path) -> dict[int, float]:
    lines = (path / "metrics.jsonl").read_text().splitlines()
    return {r["step"]: r["loss"] for r in map(json.loads, lines) if "loss" in r}


def test_sigterm_saves_at_the_next_step_and_exits_143(tmp_path):
    args = [f"--config={REPO}/configs/demo.py:steps=2000,batch=32", *DEMO, f"--workdir={tmp_path}"]
    proc = subprocess.Popen(
        [sys.executable, "-m", "mmjax.main", *cli_cache(), *args],
        env=cli_env(2),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    metrics = tmp_path / "metrics.jsonl"
    deadline = time.time() + 300
    while time.time() < deadline and not (
        metrics.exists() and metrics.read_text().count("\n") >= 3
    ):
        time.sleep(0.2)
    proc.send_signal(signal.SIGTERM)
    out, _ = proc.communicate(timeout=300)
    assert proc.returncode == 143, out[-3000:]
    assert "SIGTERM" in out and "checkpoint saved; rerun to resume" in out
    ckpt = Checkpointer(str(tmp_path / "checkpoints"), 1, 1)
    stopped = ckpt.latest_step()
    ckpt.close()
    assert 3 <= stopped < 2000
    assert max(losses_by_step(tmp_path)) <= stopped


def test_elastic_restore_8_to_4_to_1_devices(tmp_path):
    config = [f"--config={REPO}/configs/demo.py:steps=6,batch=32", *DEMO]
    # The straight run on one device compiles the program of the last elastic leg too.
    run_cli([*config, f"--workdir={tmp_path / 'straight'}"], tmp_path, devices=1)
    run = f"--workdir={tmp_path / 'elastic'}"
    run_cli([*config, run, "--config.stop_at_step=2"], tmp_path, devices=8)
    out = run_cli([*config, run, "--config.stop_at_step=4"], tmp_path, devices=4).stderr
    assert "Mesh {'data': 4" in out
    out = run_cli([*config, run], tmp_path, devices=1).stderr
    assert "Training from step 4 to 6" in out
    straight, elastic = losses_by_step(tmp_path / "straight"), losses_by_step(tmp_path / "elastic")
    assert sorted(elastic) == list(range(1, 7))
    # Same parameters and the same next batch after each restore: the same loss up to
    # float summation order over a different number of devices.
    for step in range(1, 7):
        np.testing.assert_allclose(elastic[step], straight[step], rtol=1e-4, err_msg=str(step))


def test_config_differences_ignore_operational_and_new_fields():
    old = {"optim": {"lr": 1.0}, "log_every": 10, "mesh": {"data": 8}}
    new = {"optim": {"lr": 1.0, "new_field": 3}, "log_every": 1, "mesh": {"data": 4}}
    assert workdir.config_differences(old, new) == []
    assert workdir.config_differences(old, {**new, "optim": {"lr": 2.0}}) == [
        "optim.lr: 1.0 -> 2.0"
    ]


def test_checkpoints_that_do_not_fit_the_config_fail_loudly(tmp_path):
    loop.train(tiny_config(total_steps=2), str(tmp_path))
    other_model = tiny_config(total_steps=2, **{"model.embed_dim": 24})
    with pytest.raises(CheckpointError, match=r"None of the checkpoints .* restores"):
        loop.train(other_model, str(tmp_path), overwrite=True)


def test_a_start_that_fails_before_training_never_needs_overwrite(tmp_path):
    config = [f"--config={REPO}/configs/demo.py:steps=2,batch=16", *DEMO]
    workdir = tmp_path / "workdirs" / "demo_steps_2_batch_16"  # the default workdir
    # A misspelt field, then a misspelt value: each one line, neither leaves anything behind.
    loss = "--config.objectives.image_text.loss"
    for typo, says in ((f"{loss[:-1]}=sigmoid", "Did you mean"), (f"{loss}=sigmoidd", "sigmoidd")):
        out = run_cli([*config, typo], tmp_path, devices=2, expect=1).stderr
        assert says in out and "Traceback" not in out, out[-3000:]
        assert not (workdir / "config.json").exists()
    out = run_cli([*config, f"{loss}=sigmoid"], tmp_path, devices=2).stderr
    assert "Training from step 0 to 2" in out
    saved = json.loads((workdir / "config.json").read_text())
    assert saved["objectives"]["image_text"]["loss"] == "sigmoid"
