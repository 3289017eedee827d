"""The command line: the README's commands start, train, and leave a workdir."""

import json
import os
import pathlib
import subprocess
import sys

import pytest

from tests.helpers import REPO, run_cli


def run_main(args: list[str], cwd: pathlib.Path, devices: int = 1) -> str:
    result = run_cli(args, cwd, devices)
    return result.stderr + result.stdout


def test_demo_cli_trains_into_default_workdir(tmp_path):
    out = run_main(
        [
            f"--config={REPO}/configs/demo.py:steps=6",
            "--config.schedule.warmup_steps=2",
            "--config.log_every=3",
            "--config.evals.zeroshot.every=6",
            "--config.data.synthetic.num_eval=100",
            "--config.evals.zeroshot.batch_size=48",
        ],
        tmp_path,
        devices=8,
    )
    workdir = tmp_path / "workdirs" / "demo_steps_6"
    records = [json.loads(x) for x in (workdir / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in records if "loss" in r] == [3, 6]
    assert any("zeroshot/top1" in r for r in records)
    assert (workdir / "checkpoints" / "6").is_dir()
    assert json.loads((workdir / "config.json").read_text())["data"]["synthetic"]["num_eval"] == 100
    assert "samples/s" in out and "ETA" in out


# Slow (about 55 s: two AdamW steps of the 149M-parameter model on the CPU), and the one
# test left under --runslow to keep the suite in CI's 20 minutes with the multi-process
# tests in it. Its parameter count is also checked without training (test_models.py,
# test_config.py).
@pytest.mark.slow
def test_clip_vitb_runlocal_trains_the_full_b16_model(tmp_path):
    out = run_main(
        [
            f"--config={REPO}/configs/clip_vitb.py:runlocal",
            "--config.total_steps=2",
            "--config.schedule.warmup_steps=1",
            "--config.evals.zeroshot.every=0",
        ],
        tmp_path,
    )
    # 149.62M at 224 px (open_clip ViT-B-16); runlocal's 64 px images have 180 fewer
    # position embeddings of width 768: 138,240 fewer parameters.
    assert "Model parameters: 149482497" in out  # 149,620,737 - 138,240
    assert "step 2/2" in out
    assert "SYNTHETIC" in out  # no data path: the warning says so
    assert (tmp_path / "workdirs" / "clip_vitb_runlocal" / "checkpoints" / "2").is_dir()


def test_bad_override_fails_with_the_field_name(tmp_path):
    env = dict(os.environ, PYTHONPATH=str(REPO), JAX_PLATFORMS="cpu")
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "mmjax.main",
            f"--config={REPO}/configs/demo.py",
            "--config.optim.lrr=1",
        ],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode != 0
    assert "lrr" in result.stderr


@pytest.mark.parametrize(
    "flag, expected", [("configs/clip_vitb.py:runlocal", "clip_vitb_runlocal")]
)
def test_default_workdir(flag, expected):
    from mmjax.main import default_workdir

    assert default_workdir(flag) == os.path.join("workdirs", expected)
