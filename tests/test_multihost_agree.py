"""Two JAX processes agree on what to restore, and a failure in one stops both.

gloo on 127.0.0.1, 4 fake CPU devices per process. Each process checks its share of a
checkpoint's files, so a damaged file is found by one process only: without agreement
the other would restore the damaged step while the first fell back (a hang or a
mismatch). Every agreement goes through JAX's coordination service, and the processes
meet at a barrier (no time limit to speak of) before their first collective, so one
that starts late under load does not trip gloo's 30 s context timeout.
"""

import json
import pathlib
import subprocess
import sys

from mmjax import checkpoint_files, storage
from tests.helpers import cli_cache, cli_env
from tests.test_multihost import REPO, free_port

ARGS = [
    f"--config={REPO}/configs/demo.py:steps=6,batch=32",
    "--config.schedule.warmup_steps=1",
    "--config.log_every=1",
    "--config.ckpt_every=2",
    "--config.keep_ckpts=3",
    "--config.data.num_threads=1",
    "--config.evals.zeroshot.every=0",
    "--config.evals.retrieval.every=0",
    "--config.evals.knn.every=0",
]


def launch(workdir: pathlib.Path, extra=((), ())) -> list[subprocess.CompletedProcess]:
    """Starts 2 processes (extra[i]: process i's own flags); waits for both."""
    port = free_port()
    env = cli_env(4)
    procs = [
        subprocess.Popen(
            [
                sys.executable,
                "-m",
                "mmjax.main",
                *cli_cache(),
                *ARGS,
                "--config.distributed.initialize=True",
                f"--config.distributed.coordinator_address=127.0.0.1:{port}",
                "--config.distributed.num_processes=2",
                f"--config.distributed.process_id={i}",
                "--config.distributed.cpu_collectives=gloo",
                f"--workdir={workdir}",
                *extra[i],
            ],
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        for i in range(2)
    ]
    return [
        subprocess.CompletedProcess(p.args, p.wait(timeout=900), p.stdout.read(), "") for p in procs
    ]


# Two 2-process starts of the demo (about 50 s on 2 idle cores).
def test_both_processes_fall_back_when_one_finds_the_newest_checkpoint_damaged(tmp_path):
    first = launch(tmp_path, (["--config.stop_at_step=4"],) * 2)
    assert all(r.returncode == 0 for r in first), first[0].stdout[-3000:] + first[1].stdout[-3000:]
    step_dir = str(tmp_path / "checkpoints" / "4")
    recorded = json.loads(storage.read_text(f"{step_dir}/{checkpoint_files.CHECKSUMS}"))["files"]
    theirs = [f for f in sorted(recorded)[1::2] if "/d/" in f]  # checked by process 1
    bad = max(theirs, key=lambda f: recorded[f]["size"])
    with open(f"{step_dir}/{bad}", "r+b") as f:
        f.truncate(recorded[bad]["size"] // 2)

    results = launch(tmp_path)
    for r in results:
        assert r.returncode == 0, r.stdout[-4000:]
        assert f"Skipping damaged checkpoint 4: {bad}: truncated" in r.stdout
        assert "(found by process 1)" in r.stdout
        assert "Restored checkpoint at step 2" in r.stdout
        assert "Training from step 2 to 6" in r.stdout
    lines = (tmp_path / "metrics.jsonl").read_text().splitlines()
    assert sorted({json.loads(x)["step"] for x in lines}) == [1, 2, 3, 4, 5, 6]


def test_a_failure_in_one_process_stops_the_other_with_its_message(tmp_path):
    # Process 1 fails while building its pipeline; process 0 is compiling its step, then
    # would wait for process 1 at the barrier before the first collective forever.
    results = launch(tmp_path, ((), ["--config.data.modalities.text.tokenizer=no_such_tokenizer"]))
    assert [r.returncode for r in results] == [1, 1], results[0].stdout[-3000:]
    assert "Process 1 failed:" in results[0].stdout and "no_such_tokenizer" in results[0].stdout
    assert not (tmp_path / "config.json").exists()
