"""Workdirs on gs://, against a real GCS server (fake-gcs-server on 127.0.0.1).

Everything a run writes (config.json, metrics.jsonl, TensorBoard events, checkpoints with
their data state, evaluation results, imports, sweep tables) lands in the bucket, and
nothing is written locally; a run killed and resumed there ends bitwise where a run on
local disk does.
"""

import json
import signal
import struct
import subprocess
import sys
import time
import uuid

import jax
import numpy as np
import pytest

from mmjax import checkpoint_files, storage
from mmjax import state as state_lib
from mmjax.checkpoint import Checkpointer
from mmjax.evals import standalone
from mmjax.interop import checkpoints as interop
from mmjax.sweeps import collect
from mmjax.train import loop
from tests import gcs_emulator
from tests.helpers import REPO, cli_env, tiny_config


def fresh_dir() -> str:
    return f"gs://bkt/{uuid.uuid4().hex[:8]}"


def scalar_events(data: bytes) -> dict[str, dict[int, float]]:
    """{tag: {step: value}} from a TensorBoard event file (TFRecord frames of Events)."""
    from tensorboardX.proto import event_pb2

    out: dict[str, dict[int, float]] = {}
    pos = 0
    while pos < len(data):
        (length,) = struct.unpack("<Q", data[pos : pos + 8])
        event = event_pb2.Event.FromString(data[pos + 12 : pos + 12 + length])
        pos += 12 + length + 4
        for v in event.summary.value:
            out.setdefault(v.tag, {})[event.step] = v.simple_value
    return out


def test_files_appends_and_listings_in_a_bucket(gcs):
    root = fresh_dir()
    assert not storage.exists(root) and storage.listdir(root) == []
    storage.write_text(storage.join(root, "a", "config.json"), '{"x": 1}')
    assert storage.isdir(storage.join(root, "a")) and storage.listdir(root) == ["a"]
    log = storage.join(root, "a", "metrics.jsonl")
    appended = storage.AppendFile(log)
    for i in range(3):
        appended.write(json.dumps({"step": i}) + "\n")
        appended.flush()  # uploads in the background; close waits for the last one
    appended.close()
    again = storage.AppendFile(log)  # a resumed run appends to what is there
    again.write('{"step": 3}\n')
    again.close()
    assert [json.loads(x)["step"] for x in storage.iter_lines(log)] == [0, 1, 2, 3]
    storage.rename(storage.join(root, "a", "config.json"), storage.join(root, "a", "old.json"))
    assert storage.files_under(root) == {"a/metrics.jsonl": 48, "a/old.json": 8}
    assert storage.crc32(log) == __import__("zlib").crc32(storage.read_bytes(log))


def test_tensorboard_events_land_in_the_bucket(gcs):
    root = fresh_dir()
    writer = storage.tensorboard_writer(storage.join(root, "tensorboard"))
    for step in (1, 2, 3):
        writer.add_scalar("loss", 1.0 / step, step)
    writer.close()
    (name,) = storage.listdir(storage.join(root, "tensorboard"))
    events = scalar_events(storage.read_bytes(storage.join(root, "tensorboard", name)))
    assert events == {"loss": {1: 1.0, 2: 0.5, 3: pytest.approx(1 / 3)}}


def test_run_in_a_bucket_keeps_its_data_state_evaluates_and_resumes_there(
    gcs, tmp_path, monkeypatch, caplog
):
    monkeypatch.chdir(tmp_path)  # nothing may land here
    workdir = fresh_dir()
    config = tiny_config(total_steps=6, ckpt_every=2, log_every=1)
    loop.train(tiny_config(total_steps=6, ckpt_every=2, log_every=1, stop_at_step=4), workdir)
    files = storage.files_under(workdir)
    assert {"config.json", "metrics.jsonl"} <= set(files)
    assert any(f.startswith("tensorboard/events.out.tfevents.") for f in files)
    assert "checkpoints/4/data/process_0-of-1.json" in files
    assert "checkpoints/4/" + checkpoint_files.CHECKSUMS in files
    ckpt = Checkpointer(storage.join(workdir, "checkpoints"), read_only=True)
    assert ckpt.has_data_state(4) and ckpt.check(4) == []  # os.path.exists said False
    ckpt.close()
    metrics = storage.join(workdir, "metrics.jsonl")
    assert [json.loads(x)["step"] for x in storage.iter_lines(metrics)] == [1, 2, 3, 4]

    results = standalone.evaluate(config, workdir)  # --mode=eval --workdir=gs://...
    last = json.loads(list(storage.iter_lines(metrics))[-1])
    assert last["step"] == 4 and last["zeroshot/top1"] == results["zeroshot/top1"]

    # What a kill during the save of step 6 leaves on gs://: the step's folder, without
    # Orbax's commit file. It is ignored, and saved again by the resumed run.
    storage.write_text(storage.join(workdir, "checkpoints", "6", "state", "x"), "partial")
    assert checkpoint_files.finished_steps(storage.join(workdir, "checkpoints")) == [2, 4]
    assert collect.latest_checkpoint(workdir) == 4 and not collect.is_finished(workdir, 6)
    with caplog.at_level("INFO"):
        loop.train(config, workdir)
    assert "Ignoring incomplete checkpoint gs://" in caplog.text
    assert "Restored checkpoint at step 4" in caplog.text
    assert "no data position" not in caplog.text  # restored exactly, not derived
    assert collect.is_finished(workdir, 6) and checkpoint_files.finished_steps(
        storage.join(workdir, "checkpoints")
    ) == [2, 4, 6]
    # Checksums on gs:// are GCS's own CRC32C: an object replaced by other bytes shows.
    step_dir = storage.join(workdir, "checkpoints", "6")
    recorded = json.loads(storage.read_text(storage.join(step_dir, checkpoint_files.CHECKSUMS)))
    assert all(f["checksum"].startswith("crc32c:") for f in recorded["files"].values())
    name = max(recorded["files"], key=lambda f: recorded["files"][f]["size"])
    data = bytearray(storage.read_bytes(storage.join(step_dir, name)))
    data[len(data) // 2] ^= 1
    storage.write_bytes(storage.join(step_dir, name), bytes(data))
    assert checkpoint_files.check_files(step_dir) == [
        f"{name}: content differs from when it was written (CRC32C)"
    ]
    assert list(tmp_path.iterdir()) == []


def test_imported_weights_and_sweep_tables_in_a_bucket(gcs, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    workdir = fresh_dir()
    config = tiny_config()
    mesh = jax.make_mesh((1, 1, 1), ("data", "fsdp", "tensor"), devices=jax.devices()[:1])
    abstract = state_lib.build(config, mesh).abstract
    rng = np.random.default_rng(0)
    params = jax.tree.map(
        lambda x: rng.standard_normal(x.shape).astype(x.dtype), jax.device_get(abstract.params)
    )
    params = jax.tree.map(lambda x: getattr(x, "value", x), params)
    interop.save_train_state(config, params, workdir)  # convert_open_clip.py import
    interop.write_config_file(storage.join(workdir, "imported_config.py"), {}, "test", workdir)
    back, step = interop.restore_params(config, workdir)
    assert step == 0
    for a, b in zip(jax.tree.leaves(params), jax.tree.leaves(back)):
        np.testing.assert_array_equal(a, b)
    assert "get_config" in storage.read_text(storage.join(workdir, "imported_config.py"))

    sys.path.insert(0, str(REPO / "tools"))
    import sweep

    sweep.train([sys.executable, "-c", "print('trained')"], workdir)
    assert storage.read_text(storage.join(workdir, "sweep.log")) == "trained\n"
    assert collect.wall_seconds(workdir) > 0
    collect.write_csv(storage.join(workdir, "results.csv"), [])
    assert storage.read_text(storage.join(workdir, "results.csv")).startswith("run,model,")
    assert list(tmp_path.iterdir()) == []


DEMO = [
    f"--config={REPO}/configs/demo.py:steps=40,batch=16",
    "--config.log_every=1",
    "--config.ckpt_every=10",
    "--config.schedule.warmup_steps=1",
    "--config.data.num_threads=1",
    "--config.evals.zeroshot.every=0",
    "--config.evals.retrieval.every=0",
    "--config.evals.knn.every=0",
]


def final_params(workdir: str, step: int) -> dict:
    from mmjax import config as config_lib

    config = config_lib.load_config(DEMO[0].removeprefix("--config="))
    mesh = jax.make_mesh((1, 1, 1), ("data", "fsdp", "tensor"), devices=jax.devices()[:1])
    abstract = state_lib.build(config, mesh).abstract
    ckpt = Checkpointer(storage.join(workdir, "checkpoints"), read_only=True)
    state, _ = ckpt.restore(step, abstract, None)
    ckpt.close()
    return jax.device_get(state.params)


def logged(workdir: str) -> dict[int, float]:
    lines = storage.iter_lines(storage.join(workdir, "metrics.jsonl"))
    return {r["step"]: r["loss"] for r in map(json.loads, lines) if "loss" in r}


# Three starts of the demo (about 35 s on 2 idle cores).
def test_demo_killed_and_resumed_in_a_bucket_ends_as_on_local_disk(gcs, tmp_path):
    env = {**cli_env(2), **gcs_emulator.client_env(gcs)}
    local, remote = str(tmp_path / "local"), f"{fresh_dir()}/run"
    cwd = tmp_path / "cwd"
    cwd.mkdir()
    run = [sys.executable, "-m", "mmjax.main", *DEMO]  # its compile cache in the bucket too
    subprocess.run([*run, f"--workdir={local}"], cwd=tmp_path, env=env, check=True, timeout=900)

    proc = subprocess.Popen(
        [*run, f"--workdir={remote}"],
        cwd=cwd,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    committed = storage.join(remote, "checkpoints", "10", checkpoint_files.COMMIT_FILE)
    deadline = time.time() + 900
    while proc.poll() is None and not storage.exists(committed) and time.time() < deadline:
        time.sleep(0.2)
    proc.send_signal(signal.SIGKILL)
    assert proc.wait() == -signal.SIGKILL
    assert max(logged(remote)) < 40, "the run ended before it was killed"
    resumed = subprocess.run(
        [*run, f"--workdir={remote}"], cwd=cwd, env=env, capture_output=True, text=True, timeout=900
    )
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert "Restored checkpoint at step" in resumed.stderr
    assert "no data position" not in resumed.stderr

    a, b = final_params(local, 40), final_params(remote, 40)
    for (path, x), y in zip(jax.tree_util.tree_leaves_with_path(a), jax.tree.leaves(b)):
        np.testing.assert_array_equal(x, y, err_msg=jax.tree_util.keystr(path))
    assert logged(remote) == logged(local)  # every step, bitwise the same loss
    files = storage.files_under(remote)
    assert json.loads(storage.read_text(storage.join(remote, "config.json")))["total_steps"] == 40
    events = [f for f in files if f.startswith("tensorboard/events.out.tfevents.")]
    assert len(events) == 2  # one per start
    steps = set()
    for f in events:
        steps |= set(scalar_events(storage.read_bytes(storage.join(remote, f)))["loss"])
    assert steps == set(range(1, 41))
    assert {"checkpoints/40/data/process_0-of-1.json", "checkpoints/40/state/_METADATA"} <= set(
        files
    )
    assert list(cwd.iterdir()) == []  # nothing written locally
