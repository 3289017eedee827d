"""Sweeps: grid expansion and names, finished runs, CSV rows, FLOPs, and the runner."""

import csv
import json
import math
import stat
import subprocess
import sys
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from mmjax.sweeps import collect, config_io, flops, grid
from tests.helpers import cli_env, session_cache
from tools import sweep

REPO = Path(__file__).resolve().parents[1]
LOSS, BIAS = "objectives.image_text.loss", "objectives.image_text.bias_init"
SIGMOID = {LOSS: "sigmoid", BIAS: -10.0}
SPEC = dict(
    config="configs/demo.py",
    grid={
        "loss": {"softmax": {LOSS: "softmax"}, "sigmoid": SIGMOID},
        "batch_size": [32, 128, 512],
        "samples_seen": [1024, 4096],
    },
    fixed={"optim.lr_scaling": "sqrt", "optim.lr_base_batch": 128},
    warmup_fraction=0.25,
)


def test_expand_is_the_product_with_derived_steps():
    runs = grid.expand(SPEC, base_batch_size=128)
    assert len(runs) == 2 * 3 * 2
    first, last = runs[0], runs[-1]
    assert first.name == "loss=softmax+batch_size=32+samples_seen=1024"
    assert first.overrides == {
        "optim.lr_scaling": "sqrt",
        "optim.lr_base_batch": 128,
        LOSS: "softmax",
        "batch_size": 32,
        "total_steps": 32,
        "schedule.warmup_steps": 8,
    }
    assert last.labels == {"loss": "sigmoid", "batch_size": 512, "samples_seen": 4096}
    assert last.overrides[BIAS] == -10.0
    assert last.overrides["total_steps"] == 8 and last.overrides["schedule.warmup_steps"] == 2
    assert len({r.name for r in runs}) == len(runs)


def test_samples_seen_uses_the_base_batch_and_refuses_remainders():
    runs = grid.expand(dict(config="x", grid={"samples_seen": [1280]}), base_batch_size=128)
    assert runs[0].overrides == {"total_steps": 10}
    with pytest.raises(ValueError, match="not a multiple"):
        grid.expand(dict(config="x", grid={"batch_size": [48], "samples_seen": [1000]}), 128)


def test_names_are_path_safe():
    assert grid.run_name({"model.towers.image.variant": "mu/8", "optim.lr": 1e-3}) == (
        "model.towers.image.variant=mu_8+optim.lr=0.001"
    )


def test_overrides_reach_the_config_and_the_command_line():
    overrides = {LOSS: "sigmoid", BIAS: -10.0, "batch_size": 64}
    config = config_io.load_config("configs/demo.py:steps=7", overrides)
    term = config.objectives.image_text
    assert (term.loss, term.bias_init, config.batch_size) == ("sigmoid", -10.0, 64)
    assert config.total_steps == 7
    assert config_io.override_flags(overrides) == [
        f"--config.{LOSS}=sigmoid",
        f"--config.{BIAS}=-10.0",
        "--config.batch_size=64",
    ]


def fake_run(workdir: Path, last_step: int, checkpoint: int | None, top1: float = 0.5) -> None:
    """What mmjax.main leaves behind: metrics.jsonl lines and checkpoint folders."""
    workdir.mkdir(parents=True, exist_ok=True)
    lines = [
        {"step": s, "loss": 5.0 / s, "lr": 1e-3}
        for s in range(max(1, last_step // 2), last_step + 1, max(1, last_step // 2))
    ]
    lines.append({"step": last_step, "zeroshot/top1": top1, "zeroshot/top5": 0.9})
    lines.append({"step": last_step, "retrieval/i2t_recall@1": 0.25})
    (workdir / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in lines))
    if checkpoint is not None:
        (workdir / "checkpoints" / str(checkpoint)).mkdir(parents=True)
        (workdir / "checkpoints" / f"{checkpoint + 1}.orbax-checkpoint-tmp").mkdir()


def test_finished_needs_the_last_metrics_and_the_last_checkpoint(tmp_path):
    assert not collect.is_finished(tmp_path / "missing", 10)
    fake_run(tmp_path / "done", 10, 10)
    fake_run(tmp_path / "killed_before_save", 10, 5)
    fake_run(tmp_path / "halfway", 5, 5)
    assert collect.is_finished(tmp_path / "done", 10)
    assert not collect.is_finished(tmp_path / "killed_before_save", 10)
    assert not collect.is_finished(tmp_path / "halfway", 10)
    assert collect.latest_checkpoint(tmp_path / "done") == 10  # tmp folders ignored


def test_row_has_the_final_metrics_and_the_run_settings(tmp_path):
    config = config_io.load_config(
        "configs/demo.py",
        {
            "batch_size": 512,
            "total_steps": 8,
            "optim.lr_scaling": "sqrt",
            "optim.lr_base_batch": 128,
        },
    )
    fake_run(tmp_path, 8, 8, top1=0.75)
    (tmp_path / collect.WALL_FILE).write_text(json.dumps({"wall_s": 12.5}))
    r = collect.row("r", tmp_path, config)
    assert r["samples_seen"] == 4096 and r["global_batch"] == 512 and r["steps"] == 8
    assert r["zeroshot_top1"] == 0.75 and r["i2t_recall@1"] == 0.25 and r["t2i_recall@1"] == ""
    assert r["train_loss"] == 5.0 / 8
    assert r["lr"] == pytest.approx(2e-3 * math.sqrt(512 / 128))
    assert r["params"] == 288321  # the count mmjax.main logs for the demo model
    assert r["compute_flops"] == pytest.approx(
        3 * (r["gflops_per_sample"] * 1e9 + 2 * 512 * 64) * 4096
    )
    assert r["wall_s"] == 12.5 and r["model"] == "image:mu/8@32px+text:text"
    collect.write_csv(tmp_path / "out" / "results.csv", [r])
    with open(tmp_path / "out" / "results.csv", newline="") as f:
        (back,) = csv.DictReader(f)
    assert list(back) == collect.COLUMNS and float(back["zeroshot_top1"]) == 0.75


def test_jaxpr_flops_of_a_matmul_and_a_scan():
    x = jnp.zeros((16, 64))
    w = jnp.zeros((64, 256))
    assert flops.jaxpr_flops(jax.make_jaxpr(jnp.dot)(x, w).jaxpr) == 2 * 16 * 64 * 256

    def scanned(x, ws):
        return jax.lax.scan(lambda h, w: (jnp.tanh(h @ w), None), x, ws)[0]

    ws = jnp.zeros((5, 64, 64))
    assert flops.jaxpr_flops(jax.make_jaxpr(scanned)(x, ws).jaxpr) == 5 * 2 * 16 * 64 * 64


def test_model_flops_grow_with_depth_and_match_xla_at_depth_one():
    def config(depth):
        d = {"model.towers.image.depth": depth, "model.towers.text.depth": depth}
        return config_io.load_config("configs/demo.py", d)

    f1, f2, f4 = (flops.forward_flops_per_sample(config(d)) for d in (1, 2, 4))
    assert f4 - f2 == pytest.approx(2 * (f2 - f1))  # one block per layer, both towers
    # XLA counts a scan body once, so at depth 1 its count is exact; it also counts
    # elementwise work, which ours leaves out: ours is a little below.
    from mmjax import models

    c = config(1)
    model = models.build_model(c.model, c.objectives)
    inputs = {
        "image": jax.ShapeDtypeStruct((1, 32, 32, 3), jnp.uint8),
        "text": jax.ShapeDtypeStruct((1, c.model.towers.text.context_length), jnp.int32),
    }
    variables = jax.eval_shape(model.init, jax.random.key(0), inputs)
    xla = jax.jit(model.apply).lower(variables, inputs).compile().cost_analysis()
    xla = float((xla[0] if isinstance(xla, list) else xla)["flops"])
    assert 0.75 * xla < f1 <= xla


FAKE_PYTHON = """#!{python}
# Stands in for `python -m mmjax.main`: writes what a finished run leaves behind.
import json, os, sys
args = dict(a[2:].split("=", 1) for a in sys.argv[1:] if a.startswith("--"))
workdir, steps = args["workdir"], int(args["config.total_steps"])
if os.environ.get("FAKE_FAIL_ON", "@") in workdir:
    sys.exit(3)
os.makedirs(os.path.join(workdir, "checkpoints", str(steps)), exist_ok=True)
with open(os.path.join(workdir, "metrics.jsonl"), "a") as f:
    f.write(json.dumps({{"step": steps, "loss": 1.0, "zeroshot/top1": 0.5}}) + "\\n")
with open(os.path.join(os.path.dirname(workdir), "calls.txt"), "a") as f:
    f.write(os.path.basename(workdir) + "\\n")
"""


def _sweep(monkeypatch, capsys, *args: str) -> str:
    """Runs tools/sweep.py's main in this process (the runs themselves are subprocesses)."""
    monkeypatch.setattr(sys, "argv", ["sweep.py", *args])
    sweep.main()
    return capsys.readouterr().out


def test_runner_trains_unfinished_runs_skips_finished_and_writes_the_csv(
    tmp_path, monkeypatch, capsys
):
    sweep_file = tmp_path / "sweep.py"
    sweep_file.write_text(f"def get_sweep():\n    return {SPEC!r}\n")
    fake = tmp_path / "fake_python"
    fake.write_text(FAKE_PYTHON.format(python=sys.executable))
    fake.chmod(fake.stat().st_mode | stat.S_IEXEC)
    root = tmp_path / "sweep"
    runs = grid.expand(SPEC, 128)
    steps = runs[0].overrides["total_steps"]
    fake_run(root / runs[0].name, steps, steps)
    monkeypatch.chdir(REPO)
    args = (f"--sweep={sweep_file}", f"--dir={root}", f"--python={fake}")
    out = _sweep(monkeypatch, capsys, *args)
    assert "finished, skipped" in out and "12/12 runs finished" in out
    calls = (root / "calls.txt").read_text().split()
    assert calls == [r.name for r in runs[1:]]  # each unfinished run once, in grid order
    with open(root / "results.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert [r["run"] for r in rows] == [r.name for r in runs]
    assert {(r["loss"], r["global_batch"]) for r in rows} == {
        (loss, str(b)) for loss in ("softmax", "sigmoid") for b in (32, 128, 512)
    }
    assert all(float(r["wall_s"]) > 0 for r in rows[1:])
    assert _sweep(monkeypatch, capsys, *args).count("finished, skipped") == 12
    printed = _sweep(monkeypatch, capsys, *args, "--print").splitlines()
    assert len(printed) == 12 and "--config.total_steps=32" in printed[0]
    assert printed[0].endswith(f"--workdir={root / runs[0].name}")


def test_a_failed_run_is_reported_and_the_others_still_run(tmp_path, monkeypatch, capsys):
    sweep_file = tmp_path / "sweep.py"
    sweep_file.write_text(f"def get_sweep():\n    return {SPEC!r}\n")
    fake = tmp_path / "fake_python"
    fake.write_text(FAKE_PYTHON.format(python=sys.executable))
    fake.chmod(fake.stat().st_mode | stat.S_IEXEC)
    monkeypatch.chdir(REPO)
    monkeypatch.setenv("FAKE_FAIL_ON", "batch_size=128+")
    root = tmp_path / "sweep"
    with pytest.raises(SystemExit) as stop:
        _sweep(monkeypatch, capsys, f"--sweep={sweep_file}", f"--dir={root}", f"--python={fake}")
    assert stop.value.code == 1
    out = capsys.readouterr().out
    assert out.count("failed (exit 3)") == 4 and "8/12 runs finished" in out


def test_real_sweep_of_four_tiny_runs_and_its_plot(tmp_path):
    """Four real demo trainings (2 losses x 2 batches, 2 and 8 steps), the CSV and the
    plot (a power law per loss through its two points)."""
    spec = dict(
        config="configs/demo.py",
        grid={
            "loss": {"softmax": {LOSS: "softmax"}, "sigmoid": SIGMOID},
            "batch_size": [16, 64],
            "samples_seen": [128],
        },
        fixed={
            "evals.zeroshot.every": 1000,
            "evals.zeroshot.batch_size": 100,
            "data.synthetic.num_eval": 100,
            "evals.retrieval.every": 0,
            "evals.knn.every": 0,
            "check_memory": False,
            "compile_cache_dir": session_cache(),
        },
        warmup_fraction=0.25,
    )
    sweep_file = tmp_path / "sweep.py"
    sweep_file.write_text(f"def get_sweep():\n    return {spec!r}\n")
    root = tmp_path / "sweep"
    subprocess.run(
        [sys.executable, str(REPO / "tools/sweep.py"), f"--sweep={sweep_file}", f"--dir={root}"],
        check=True,
        cwd=REPO,
        env=cli_env(1),  # the runs on one device: the sweep, not the mesh, is under test
    )
    with open(root / "results.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == 4 and all(0 <= float(r["zeroshot_top1"]) <= 1 for r in rows)
    out = tmp_path / "plot"
    subprocess.run(
        [
            sys.executable,
            str(REPO / "tools/plot_scaling.py"),
            f"--csv={root / 'results.csv'}",
            f"--out={out}",
            "--x=global_batch",
            "--group=loss",
            "--bootstrap=50",
        ],
        check=True,
        cwd=REPO,
    )
    assert out.with_suffix(".png").exists() and "loss=sigmoid" in out.with_suffix(".md").read_text()
    assert np.isfinite([float(r["compute_flops"]) for r in rows]).all()
