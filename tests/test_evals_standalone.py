"""Evaluators in the train loop and standalone on a checkpoint: same numbers, all printed."""

import json

import pytest

from mmjax.evals import standalone
from mmjax.evals.progress import Ticker
from mmjax.train import loop
from tests.helpers import tiny_config
from tests.test_main import REPO, run_main

FOUR = ("zeroshot", "retrieval", "knn", "linear_probe")


def test_standalone_eval_of_a_checkpoint_prints_all_four(tmp_path, capsys):
    config = tiny_config(total_steps=2, ckpt_every=2, log_every=1)
    with config.unlocked():  # in the loop: retrieval only (every=2); the rest standalone
        config.evals.retrieval = dict(type="retrieval", every=2, batch_size=16)
        config.evals.knn = dict(type="knn", batch_size=16)
        config.evals.linear_probe = dict(type="linear_probe", batch_size=16, max_iter=50)
    in_loop = loop.train(config, str(tmp_path))
    assert "retrieval/i2t_recall@10" in in_loop and "knn/top1" not in in_loop

    results = standalone.evaluate(config, str(tmp_path))
    printed = capsys.readouterr().out
    assert "Evaluation at step 2" in printed
    for name in FOUR:
        assert any(line.startswith(name + " ") for line in printed.splitlines()), name
    assert len(results) == 3 + 6 + 2 + 2
    # The same parameters and evaluators in the loop and standalone: the same numbers.
    for key, value in in_loop.items():
        if key.split("/")[0] in FOUR:
            assert results[key] == value, key
    last = json.loads((tmp_path / "metrics.jsonl").read_text().splitlines()[-1])
    assert last["step"] == 2 and set(results) <= set(last)

    with pytest.raises(standalone.NoCheckpointError, match=r"step 3.*\[2\]"):
        standalone.evaluate(config, str(tmp_path), step=3)


def test_progress_logs_each_tenth_of_a_long_pass(caplog):
    caplog.set_level("INFO")
    ticker = Ticker("retrieval: texts", 25, quiet_s=0)
    for _ in range(25):
        ticker.tick()
    lines = [r.getMessage() for r in caplog.records]
    assert len(lines) == 10 and lines[-1].startswith("retrieval: texts [##########] 100%")
    assert "(3/25 batches" in lines[0] and "[#---------]  12%" in lines[0]
    quiet = Ticker("zero-shot", 25)  # a pass shorter than 5 s says nothing
    for _ in range(25):
        quiet.tick()
    assert len(caplog.records) == 10


def test_cli_eval_mode_on_a_demo_checkpoint(tmp_path):
    common = [
        f"--config={REPO}/configs/demo.py:steps=4",
        "--config.schedule.warmup_steps=1",
        "--config.data.synthetic.num_eval=100",
        f"--workdir={tmp_path / 'run'}",
    ]
    run_main(
        [
            *common,
            "--config.evals.zeroshot.every=0",
            "--config.evals.retrieval.every=0",
            "--config.evals.knn.every=0",
            "--config.ckpt_every=2",
        ],
        tmp_path,
    )
    out = run_main([*common, "--mode=eval", "--step=2"], tmp_path, devices=2)  # saved on 1
    assert "Evaluation at step 2" in out
    for name in FOUR:
        assert f"\n{name} " in out, name
