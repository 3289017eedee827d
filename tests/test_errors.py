"""Every bad input fails cleanly: exit status 1, a message naming the input, no traceback.

The command lines run as a user types them. Most run in one process per group through
tests/cli_driver.py (one JAX start for all of them: `mmjax.main.run` with absl's
`app.run`, tools through their `__main__` blocks), a few as real `python -m mmjax.main`
subprocesses, including the typo-then-fix sequence on one default workdir. Bad data at
run time (shards that vanish, records that decode to another size, captions over the
context) is skipped and counted by the pipeline itself, tested here on its iterators.
"""

import json
import os
import pathlib
import subprocess
import sys
import tarfile

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from mmjax import errors, shapes
from mmjax.data import modalities, pipeline
from mmjax.data.examples import Prepare
from mmjax.data.skipped import Skipped
from mmjax.data.stages import TrainIterator
from tests.helpers import REPO, cli_env, tiny_config

TRACEBACK = "Traceback (most recent call last)"
DEMO = f"--config={REPO}/configs/demo.py"
MAIN = "mmjax.main"


def tool(name: str) -> str:
    return str(REPO / "tools" / name)


# name -> (argv, fragments the output must contain). Paths in {braces} are the fixture's.
CASES: dict[str, tuple[list[str], list[str]]] = {
    # ------------------------------------------------------------ flags and config fields
    "unknown_field": ([MAIN, DEMO, "--config.no_such_field=1"], ["'no_such_field'", "no field"]),
    "misspelt_field": ([MAIN, DEMO, "--config.optim.lrr=1"], ["Did you mean optim.lr?"]),
    "old_field_name": (
        [MAIN, DEMO, "--config.loss.name=sigmoid"],
        ["no field 'loss'", "objectives.image_text.loss"],
    ),
    "int_field_abc": (
        [MAIN, DEMO, "--config.batch_size=abc"],
        ["config.batch_size takes an integer", "'abc'"],
    ),
    "float_field_abc": ([MAIN, DEMO, "--config.optim.lr=abc"], ["optim.lr takes a number"]),
    "bool_field": ([MAIN, DEMO, "--config.check_memory=maybe"], ["true or false", "'maybe'"]),
    "tuple_field": (
        [MAIN, DEMO, "--config.mesh.rules=abc"],
        ["config.mesh.rules[0]", "(logical name, mesh axes)"],
    ),
    "config_arg_type": (
        [MAIN, f"--config={REPO}/configs/demo.py:steps=abc"],
        ["steps takes an integer", "'abc'"],
    ),
    "config_arg_unknown": (
        [MAIN, f"--config={REPO}/configs/demo.py:stpes=3"],
        ["Unknown config arg 'stpes'", "Did you mean 'steps'?"],
    ),
    "config_file_missing": (
        [MAIN, f"--config={REPO}/configs/dmeo.py"],
        ["dmeo.py' does not exist", "Did you mean 'demo.py'"],
    ),
    "config_file_fails": (
        [MAIN, "--config={tmp}/broken.py"],
        ["get_config() in", "broken.py (line 6)", "NameError: name 'typo_here'"],
    ),
    "no_config_flag": ([MAIN, "--workdir=x"], ["--config is required"]),
    "unknown_flag": ([MAIN, DEMO, "--workdirr=x"], ["'workdirr'", "Did you mean: workdir?"]),
    "positional_argument": ([MAIN, DEMO, "extra"], ["unexpected argument 'extra'"]),
    "step_without_eval": ([MAIN, DEMO, "--step=3"], ["--step=3", "--mode=eval"]),
    # ------------------------------------------------------------- registry names
    "unknown_loss": (
        [MAIN, DEMO, "--config.objectives.image_text.loss=nope"],
        ["config.objectives.image_text.loss: unknown loss 'nope'", "softmax_ring"],
    ),
    "unknown_variant": (
        [MAIN, DEMO, "--config.model.towers.image.variant=Z/99"],
        ["config.model.towers.image", "'Z/99'", "B/16"],
    ),
    "unknown_tower_type": (
        [MAIN, DEMO, "--config.model.towers.image.type=cnn"],
        ["config.model.towers.image.type: unknown tower type 'cnn'", "vit"],
    ),
    "tower_type_switched": (
        [MAIN, DEMO, "--config.model.towers.image.type=text"],
        ["config.model.towers.image", "needs fields ['causal', 'context_length', 'vocab_size']"],
    ),
    "unknown_tokenizer": (
        [MAIN, DEMO, "--config.data.modalities.text.tokenizer=nope"],
        ["config.data.modalities.text", "'nope'", "clip_bpe"],
    ),
    "tokenizer_vocabulary": (
        [MAIN, DEMO, "--config.data.modalities.text.tokenizer=clip_bpe"],
        ["vocab_size >= 49408", "got 1024"],
    ),
    "unknown_modality_type": (
        [MAIN, DEMO, "--config.data.modalities.image.type=picture"],
        ["config.data.modalities.image.type", "'picture'", "video"],
    ),
    "unknown_source": (
        [MAIN, DEMO, "--config.data.source=nope"],
        ["config.data.source: unknown data source 'nope'", "wds"],
    ),
    "unknown_evaluator": (
        [MAIN, DEMO, "--config.evals.knn.type=nope"],
        ["config.evals.knn.type: unknown evaluator 'nope'", "zeroshot"],
    ),
    "unknown_schedule": (
        [MAIN, DEMO, "--config.schedule.name=cosine"],
        ["config.schedule.name: unknown schedule 'cosine'", "warmup_cosine"],
    ),
    "unknown_dtype": (
        [MAIN, DEMO, "--config.model.dtype=float33"],
        ["config.model.dtype", "'float33'", "bfloat16"],
    ),
    "unknown_remat": ([MAIN, DEMO, "--config.model.remat=some"], ["config.model.remat", "dots"]),
    # ------------------------------------------------------- impossible combinations
    "batch_zero": ([MAIN, DEMO, "--config.batch_size=0"], ["config.batch_size: must be positive"]),
    "batch_indivisible": (
        [MAIN, DEMO, "--config.batch_size=100"],
        ["config.batch_size: 100 is not divisible by the 8 devices", "e.g. 96"],
    ),
    "accumulation_indivisible": (
        [MAIN, DEMO, "--config.accum_steps=3"],
        ["accum_steps=3 micro-batches", "a multiple of 24"],
    ),
    "objective_without_tower": (
        [MAIN, DEMO, "--config.objectives.image_text.modalities=('image', 'audio')"],
        ["config.objectives.image_text.modalities: 'audio' has no tower"],
    ),
    "loss_without_labels": (
        [MAIN, DEMO, "--config.objectives.image_text.loss=multi_positive"],
        ["config.objectives.image_text.labels", "needs labels"],
    ),
    "ring_tile_zero": ([MAIN, "--config={tmp}/ring.py"], ["tile_size: must be a positive int"]),
    "warmup_past_end": (
        [MAIN, DEMO, "--config.schedule.warmup_steps=5000"],
        ["config.schedule.warmup_steps: 5000 exceeds total_steps=1000"],
    ),
    "mesh_indivisible": (
        [MAIN, DEMO, "--config.mesh.fsdp=3"],
        ["config.mesh", "does not divide 8 devices"],
    ),
    "image_size_not_patches": (
        [MAIN, DEMO, "--config.data.modalities.image.size=30"],
        ["config.model.towers.image", "uint8 [30, 30, 3]", "not divisible by patch 8"],
    ),
    "empty_record_key": (
        [MAIN, DEMO, "--config.data.modalities.image.key="],
        ["config.data.modalities.image: key is empty"],
    ),
    "negative_lr": ([MAIN, DEMO, "--config.optim.lr=-1"], ["config.optim.lr: must be >= 0"]),
    "embed_dim_zero": (
        [MAIN, DEMO, "--config.model.embed_dim=0"],
        ["config.model.embed_dim: must be positive, got 0"],
    ),
    "mesh_axis_zero": (
        [MAIN, DEMO, "--config.mesh.data=0"],
        ["config.mesh.data: must be a positive int or -1", "got 0"],
    ),
    "context_length_zero": (
        [MAIN, DEMO, "--config.model.towers.text.context_length=0"],
        ["config.model.towers.text.context_length: must be positive, got 0"],
    ),
    "tower_depth_negative": (
        [MAIN, DEMO, "--config.model.towers.image.depth=-1"],
        ["config.model.towers.image.depth: must be >= 0", "got -1"],
    ),
    "temperature_outside_clamp": (
        [MAIN, DEMO, "--config.objectives.image_text.temperature_init=-1"],
        ["config.objectives.image_text.temperature_init: -1.0 is outside [0, log max_scale"],
    ),
    "labels_not_in_batch": (
        [MAIN, DEMO, "--config.objectives.image_text.labels=colour"],
        ["config.objectives.image_text.labels: 'colour' is not in the batch"],
    ),
    "process_id_out_of_range": (
        [
            MAIN,
            DEMO,
            "--config.distributed.initialize=true",
            "--config.distributed.coordinator_address=127.0.0.1:1",
            "--config.distributed.num_processes=2",
            "--config.distributed.process_id=5",
        ],
        ["config.distributed.process_id: must be in [0, 1]"],
    ),
    "param_dtype_unknown": (
        [MAIN, DEMO, "--config.model.param_dtype=float33"],
        ["config.model.param_dtype: unknown dtype 'float33'", "bfloat16"],
    ),
    "attention_unknown": (
        [MAIN, DEMO, "--config.model.attention=flash"],
        ["config.model.attention: unknown attention 'flash'", "cudnn"],
    ),
    "freeze_not_a_regex": (
        [MAIN, DEMO, "--config.optim.freeze=('[unclosed',)"],
        ["config.optim.freeze[0]: '[unclosed' is not a regex"],
    ),
    "lr_mults_not_pairs": (
        [MAIN, DEMO, "--config.optim.lr_mults=('image',)"],
        ["config.optim.lr_mults[0]: 'image' is not a (regex, multiplier) pair"],
    ),
    "layer_decay_unknown_tower": (
        [MAIN, DEMO, "--config.optim.layer_decay=0.5", "--config.optim.layer_decay_towers=audio"],
        ["config.optim.layer_decay_towers: unknown tower 'audio'"],
    ),
    "ema_decay_above_one": (
        [MAIN, DEMO, "--config.ema.decay=1.5"],
        ["config.ema.decay: must be in [0, 1)"],
    ),
    "eval_weights_without_ema": (
        [MAIN, DEMO, "--config.evals.zeroshot.weights=ema"],
        ["config.evals.zeroshot.weights: 'ema' needs an EMA: set config.ema.decay"],
    ),
    "token_drop_out_of_range": (
        [MAIN, DEMO, "--config.model.towers.image.token_drop=1.5"],
        ["config.model.towers.image.token_drop: must be in [0, 1)"],
    ),
    "worker_processes_negative": (
        [MAIN, DEMO, "--config.data.worker_processes=-1"],
        ["config.data.worker_processes: must be >= 0"],
    ),
    # ---------------------------------------------------------------- paths and data
    "wds_path_matches_nothing": (
        [
            MAIN,
            DEMO,
            "--config.data.source=wds",
            "--config.data.path=/nonexistent/{00000..00003}.tar",
        ],
        ["config.data.path", "matches no files", "no such folder: /nonexistent"],
    ),
    "wds_folder_without_shards": (
        [MAIN, DEMO, "--config.data.source=wds", "--config.data.path={tmp}/empty"],
        ["config.data.path", "holds no *.tar files"],
    ),
    "wds_shards_unreadable": (
        [MAIN, DEMO, "--config.data.source=wds", "--config.data.path={tmp}/notar"],
        ["config.data.path: none of the first 2 shards reads as a tar", "00000.tar"],
    ),
    "arrayrecord_unreadable": (
        [MAIN, DEMO, "--config.data.source=arrayrecord", "--config.data.path={tmp}/ar"],
        ["config.data.path", "does not open as an ArrayRecord file"],
    ),
    "init_workdir_missing": (
        [MAIN, DEMO, "--config.init.workdir={tmp}/nothing_here"],
        ["config.init.workdir:", "holds no checkpoints folder"],
    ),
    "workdir_unwritable": (
        [MAIN, DEMO, "--workdir={tmp}/a_file/run"],
        ["--workdir=", "cannot write there"],
    ),
    # -------------------------------------------------------------------- checkpoints
    "eval_workdir_missing": (
        [MAIN, DEMO, "--mode=eval", "--workdir={tmp}/nothing_here"],
        ["--workdir=", "no such folder"],
    ),
    "eval_without_checkpoints": (
        [MAIN, DEMO, "--mode=eval", "--workdir={tmp}/empty"],
        ["No checkpoint in", "checkpoints: no such folder"],
    ),
    "eval_step_missing": (
        [MAIN, DEMO, "--mode=eval", "--workdir={tmp}/damaged", "--step=7"],
        ["No step 7 in", "steps there: [2]"],
    ),
    "eval_checkpoint_damaged": (
        [MAIN, DEMO, "--mode=eval", "--workdir={tmp}/damaged"],
        ["Checkpoint 2 in", "is damaged (state/array_data: missing)"],
    ),
    # -------------------------------------------------------------------------- tools
    "plot_csv_missing": (
        [tool("plot_scaling.py"), "--csv={tmp}/none.csv", "--out={tmp}/plot"],
        ["No such file or directory", "none.csv"],
    ),
    "plot_column_unknown": (
        [tool("plot_scaling.py"), "--csv={tmp}/results.csv", "--out={tmp}/plot", "--x=flops"],
        ["--x: unknown column", "'flops'", "compute_flops"],
    ),
    "sweep_file_missing": (
        [tool("sweep.py"), "--sweep={tmp}/nope.py", "--dir={tmp}/sweep"],
        ["sweep file", "nope.py' does not exist"],
    ),
    "sweep_file_without_function": (
        [tool("sweep.py"), "--sweep={tmp}/broken_sweep.py", "--dir={tmp}/sweep"],
        ["has no get_sweep() function"],
    ),
    "shards_unknown_modality": (
        [tool("make_synthetic_shards.py"), "--out={tmp}/out", "--modalities=image,smell"],
        ["Unknown modalities ['smell']"],
    ),
    "converter_no_shards": (
        [tool("wds_to_arrayrecord.py"), "--src={tmp}/empty", "--out={tmp}/out_ar"],
        ["matches no files", "holds no *.tar files"],
    ),
    "chaos_workdir_exists": (
        [tool("chaos.py"), "--workdir={tmp}/empty"],
        ["exists: remove it or pass another --workdir"],
    ),
    "bench_loss_unknown_variant": (
        [tool("bench_loss.py"), "--variants=softmax,sigmoidd"],
        ["--variants: unknown loss 'sigmoidd'", "Did you mean 'sigmoid'"],
    ),
    "bench_data_threads": ([tool("bench_data.py"), "--threads=two"], ["--threads=two"]),
    "bench_step_set_without_value": (
        [tool("bench_step.py"), f"--config={REPO}/configs/demo.py", "--set", "batch_size"],
        ["--set batch_size: give key=value"],
    ),
    "bench_step_bad_config": (
        [tool("bench_step.py"), f"--config={REPO}/configs/demo.py", "--set", "batch_size=100"],
        ["config.batch_size: 100 is not divisible by the 8 devices"],
    ),
    "bench_patch_dropout_ratios": (
        [tool("bench_patch_dropout.py"), "--ratios=half"],
        ["--ratios=half: give numbers"],
    ),
}
# absl tools (the open_clip converter, the checkpoint upgrade) define flags of the same
# names as mmjax.main's: their own process.
ABSL_CASES: dict[str, tuple[list[str], list[str]]] = {
    "open_clip_unknown_model": (
        [
            tool("convert_open_clip.py"),
            "import",
            "--model=ViT-Nope-1",
            "--checkpoint={tmp}/w.pt",
            "--workdir={tmp}/imp",
        ],
        ["import: Unknown open_clip model 'ViT-Nope-1'", "ViT-B-32"],
    ),
    "open_clip_export_without_config": (
        [tool("convert_open_clip.py"), "export", "--workdir={tmp}/empty"],
        ["No such file or directory", "config.json"],
    ),
    "open_clip_bad_override": (
        [tool("convert_open_clip.py"), "export", "--workdir={tmp}/empty", DEMO, "--config.lr=1"],
        ["--config.lr=1", "Did you mean optim.lr?"],
    ),
    "open_clip_no_command": ([tool("convert_open_clip.py")], ["usage: convert_open_clip.py"]),
    "upgrade_no_workdir": ([tool("upgrade_checkpoint.py")], ["usage: upgrade_checkpoint.py"]),
    "upgrade_without_config_json": (
        [tool("upgrade_checkpoint.py"), "--workdir={tmp}/empty"],
        ["upgrade: No ", "config.json: pass the run's config with --config."],
    ),
    "upgrade_without_checkpoints": (
        [tool("upgrade_checkpoint.py"), "--workdir={tmp}/empty", DEMO],
        ["upgrade: No checkpoint in", "empty/checkpoints"],
    ),
    "upgrade_bad_override": (
        [tool("upgrade_checkpoint.py"), "--workdir={tmp}/empty", DEMO, "--config.optim.lrr=1"],
        ["--config.optim.lrr=1", "Did you mean optim.lr?"],
    ),
    "upgrade_bad_bool_flag": (
        [tool("upgrade_checkpoint.py"), "--workdir={tmp}/empty", "--keep_old=maybe"],
        ["--keep_old=maybe", "Non-boolean argument"],
    ),
}
BUG = "internal_error"


RING_CONFIG = f"""
import sys
sys.path.insert(0, {str(REPO)!r})
from mmjax import config as mmconfig
def get_config(arg=None):
    c = mmconfig.load_config({str(REPO / "configs" / "demo.py")!r})
    with c.unlocked():
        c.objectives.image_text = mmconfig.objective("softmax_ring", ("image", "text"))
    c.objectives.image_text.tile_size = 0
    return c
"""
BROKEN_CONFIG = """
from mmjax import config as mmconfig


def get_config(arg=None):
    return mmconfig.base(typo_here)
"""
# A genuine internal error: a reader whose construction fails for no fault of the input.
BUG_CONFIG = f"""
from mmjax import config as mmconfig
from mmjax.data import modalities

if "broken_for_test" not in modalities.MODALITY_TYPES:
    @modalities.register_modality("broken_for_test", key="jpg")
    def broken(name, c, config, train):
        raise RuntimeError("an internal invariant does not hold")

def get_config(arg=None):
    c = mmconfig.load_config({str(REPO / "configs" / "demo.py")!r})
    c.data.modalities.image = mmconfig.modality("broken_for_test")
    return c
"""


def write_fixtures(tmp) -> None:
    """The files the cases name: config files, shard folders, a damaged checkpoint."""
    (tmp / "ring.py").write_text(RING_CONFIG)
    (tmp / "broken.py").write_text(BROKEN_CONFIG)
    (tmp / "bug.py").write_text(BUG_CONFIG)
    (tmp / "broken_sweep.py").write_text("SWEEP = {}\n")
    (tmp / "a_file").write_text("not a folder")
    (tmp / "empty").mkdir()
    (tmp / "notar").mkdir()
    for i in range(2):
        (tmp / "notar" / f"0000{i}.tar").write_bytes(b"<html>403 Forbidden</html>" * 40)
    (tmp / "ar").mkdir()
    (tmp / "ar" / "x.array_record").write_bytes(b"not an array record file" * 10)
    (tmp / "results.csv").write_text("name,compute_flops,zeroshot_top1,loss\na,1e9,0.5,softmax\n")
    # A step whose checksums list a file that is gone.
    step = tmp / "damaged" / "checkpoints" / "2"
    (step / "state").mkdir(parents=True)
    (step / "state" / "_METADATA").write_text("{}")
    files = {"state/array_data": {"size": 10, "checksum": "crc32:0"}}
    (step / "mmjax_checksums.json").write_text(json.dumps({"files": files}))


def run_driver(tmp, cases: dict, name: str) -> dict[str, dict]:
    """Runs `cases` in one driver process; {name: {"status", "output"}}."""
    listed = [
        {"name": k, "argv": [a.replace("{tmp}", str(tmp)) for a in argv], "cwd": str(tmp / "work")}
        for k, (argv, _) in cases.items()
    ]
    cases_file, results_file = tmp / f"{name}.json", tmp / f"{name}_results.json"
    cases_file.write_text(json.dumps(listed))
    proc = subprocess.run(
        [sys.executable, str(REPO / "tests" / "cli_driver.py"), str(cases_file), str(results_file)],
        env=cli_env(8),
        cwd=tmp,
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    return {r["name"]: r for r in json.loads(results_file.read_text())}


def interop_imports() -> bool:
    """Whether tools/convert_open_clip.py can start (mmjax.interop imports)."""
    try:
        import mmjax.interop.open_clip  # noqa: F401
    except ImportError:
        return False
    return True


@pytest.fixture(scope="module")
def bad_inputs_dir(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("bad_inputs")
    (tmp / "work").mkdir()
    write_fixtures(tmp)
    return tmp


@pytest.fixture(scope="module")
def results(bad_inputs_dir) -> dict[str, dict]:
    main_cases = {**CASES, BUG: ([MAIN, "--config={tmp}/bug.py"], [])}
    return run_driver(bad_inputs_dir, main_cases, "main")


@pytest.fixture(scope="module")
def absl_results(bad_inputs_dir) -> dict[str, dict]:
    if not interop_imports():
        pytest.skip("mmjax.interop does not import here, so neither does the converter")
    return run_driver(bad_inputs_dir, ABSL_CASES, "absl")


def clean_failure(result: dict, fragments: list[str]) -> None:
    out = result["output"]
    assert result["status"] == 1, f"status {result['status']}:\n{out[-3000:]}"
    assert TRACEBACK not in out, out[-3000:]
    for fragment in fragments:
        assert fragment in out, f"{fragment!r} not in:\n{out[-3000:]}"
    error_lines = [x for x in out.splitlines() if x.startswith("Error: ")]
    assert len(error_lines) == 1, out[-3000:]


@pytest.mark.parametrize("name", sorted(CASES))
def test_bad_input_fails_cleanly(results, name):
    clean_failure(results[name], CASES[name][1])


@pytest.mark.parametrize("name", sorted(ABSL_CASES))
def test_bad_input_to_the_converter_fails_cleanly(absl_results, name):
    clean_failure(absl_results[name], ABSL_CASES[name][1])


def test_an_internal_error_shows_its_traceback_and_says_it_is_a_bug(results):
    out = results[BUG]["output"]
    assert results[BUG]["status"] == 1
    assert TRACEBACK in out and "an internal invariant does not hold" in out
    assert out.rstrip().splitlines()[-1].startswith("Internal error: This is a bug in mmjax")


def test_at_least_25_distinct_bad_inputs():
    assert len(CASES) >= 25  # without the converter's, which need mmjax.interop


# ----------------------------------------------------------- real subprocesses


def run_main(args: list[str], cwd, devices: int = 2) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "mmjax.main", *args],
        cwd=cwd,
        env=cli_env(devices),
        capture_output=True,
        text=True,
        timeout=600,
    )


def assert_clean(proc: subprocess.CompletedProcess, *fragments: str) -> None:
    out = proc.stdout + proc.stderr
    assert proc.returncode == 1, out[-3000:]
    assert TRACEBACK not in out, out[-3000:]
    for f in fragments:
        assert f in out, out[-3000:]


def test_the_issues_absl_flag_case_fails_cleanly_as_a_subprocess(tmp_path):
    # The one true `python -m mmjax.main` here (the driver covers the rest in one process;
    # tests/test_reliability.py runs the typo-then-fix sequence the same way).
    proc = run_main([f"--config={REPO}/configs/demo.py:steps=abc"], tmp_path)
    assert_clean(proc, "steps takes an integer", "'abc'")
    assert len([x for x in proc.stderr.splitlines() if x.startswith("Error: ")]) == 1


# ------------------------------------------------------------- the boundary itself


def test_boundary_prints_user_errors_in_one_line_and_bugs_with_a_traceback(capsys):
    with pytest.raises(SystemExit) as stop, errors.boundary():
        raise errors.UserError("config.x: bad value 3; use 4.")
    assert stop.value.code == 1
    err = capsys.readouterr().err
    assert err == "Error: config.x: bad value 3; use 4.\n"
    with pytest.raises(SystemExit) as stop, errors.boundary():
        pathlib.Path("/nonexistent/file").read_text()
    err = capsys.readouterr().err
    assert err == "Error: No such file or directory: /nonexistent/file (ENOENT).\n"
    with pytest.raises(SystemExit) as stop, errors.boundary():
        raise KeyError("internal")
    err = capsys.readouterr().err
    assert TRACEBACK in err and "KeyError: 'internal'" in err and "This is a bug" in err


def test_suggestions_come_from_the_known_names():
    assert errors.suggest("sigmoidd", ["sigmoid", "softmax"]) == " Did you mean 'sigmoid'?"
    assert errors.suggest("zzz", ["sigmoid", "softmax"]) == ""


# -------------------------------------------------------------- bad data at run time


class ArraySource:
    """Random-access records {image, text, label}; `bad` rows get a two-channel image
    (grey and alpha), which resizes to [size, size, 2]."""

    def __init__(self, n: int, size: int, bad: set[int]):
        self.n, self.size, self.bad = n, size, bad

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, i: int) -> dict:
        channels = 2 if i in self.bad else 3
        image = np.full((self.size + 4, self.size + 4, channels), i % 255, np.uint8)
        return {"image": image, "text": f"caption {i}", "label": i, "__key__": str(i)}


def iterator_over(source, config) -> TrainIterator:
    prepare = Prepare(modalities.build_readers(config, train=True))
    open_batches = pipeline.READERS.get("random_access")(source, prepare, config, 0, 1)
    return TrainIterator(open_batches, config.batch_size, modalities.skip_reasons(config))


def test_records_that_decode_to_another_shape_are_skipped_and_counted():
    config = tiny_config(**{"data.modalities.image.resizer": "pil"})
    size = config.data.modalities.image.size
    bad = {3, 7, 20}
    it = iterator_over(ArraySource(64, size, bad), config)
    batches = [next(it) for _ in range(3)]
    it.close()
    for b in batches:
        chex.assert_shape(b["image"], (config.batch_size, size, size, 3))
        chex.assert_type(b["image"], jnp.uint8)
    seen = np.concatenate([b["image"][:, 0, 0, 0] for b in batches])  # each record's index
    assert not set(seen) & bad and len(seen) == 3 * config.batch_size
    # 48 of the 61 good records: most of the epoch was read, each bad one at most once.
    assert 1 <= it.skipped["bad_image"] <= len(bad)
    assert sum(it.skipped.values()) == it.skipped["bad_image"]


def test_a_record_that_decodes_to_another_shape_is_skipped_with_the_shapes():
    config = tiny_config(**{"data.modalities.image.resizer": "pil"})
    prepare = Prepare(modalities.build_readers(config, train=False))
    rng = np.random.default_rng(0)
    good = prepare({"image": np.zeros((20, 20, 3), np.uint8), "text": "a cat"}, rng)
    chex.assert_shape(good["image"], (16, 16, 3))
    out = prepare({"image": np.zeros((20, 20, 2), np.uint8), "text": "a cat", "__key__": "k"}, rng)
    assert isinstance(out, Skipped) and out.reason == "bad_image" and out.key == "k"
    assert "decoded to shape [16, 16, 2], not [16, 16, 3]" in out.detail


def test_captions_over_the_context_are_truncated_or_skipped_and_counted():
    config = tiny_config()
    context = config.model.towers.text.context_length
    long = " ".join(f"w{i}" for i in range(3 * context))
    cut = modalities.build_readers(config)["text"][1](long, None)
    chex.assert_shape(cut, (context,))
    assert cut[-1] == cut.max()  # the end token kept in the last place
    with config.unlocked():
        config.data.modalities.text.too_long = "skip"
    reader = modalities.build_readers(config)["text"][1]
    skipped = reader(long, None)
    assert isinstance(skipped, Skipped) and skipped.reason == "long_text"
    assert "long_text" in modalities.skip_reasons(config)
    truncating = modalities.build_readers(tiny_config())["text"][1]
    np.testing.assert_array_equal(reader("a short one", None), truncating("a short one", None))


def write_tar(path, n: int, first: int) -> None:
    """A shard of `n` samples of a PNG and a caption."""
    import io

    from PIL import Image

    with tarfile.open(path, "w") as tar:
        for j in range(first, first + n):
            png = io.BytesIO()
            Image.fromarray(np.full((20, 20, 3), j % 255, np.uint8)).save(png, "PNG")
            for ext, data in (("png", png.getvalue()), ("txt", f"caption {j}".encode())):
                info = tarfile.TarInfo(f"{j:06d}.{ext}")
                info.size = len(data)
                tar.addfile(info, io.BytesIO(data))


def test_shards_that_vanish_or_break_mid_run_are_skipped_and_counted(tmp_path):
    for s in range(6):
        write_tar(tmp_path / f"{s:05d}.tar", 16, 16 * s)
    config = tiny_config(
        **{
            "data.source": "wds",
            "data.path": str(tmp_path),
            "data.shuffle_buffer": 0,
            "data.cycle_length": 1,
        }
    )
    it = pipeline.train_iterator(config, 0, 1)
    first = next(it)
    chex.assert_shape(first["image"], (16, 16, 16, 3))
    again = pipeline.train_iterator(config, 0, 1)
    chex.assert_trees_all_equal(next(again), first)  # the same data, read the same way
    again.close()
    # One shard read: now every other one disappears or is cut short.
    for s in range(6):
        path = tmp_path / f"{s:05d}.tar"
        if s % 2:
            path.unlink()
        else:
            with open(path, "r+b") as f:
                f.truncate(os.path.getsize(path) // 3)
    batches = [next(it) for _ in range(3)]  # the remains of the cut shards, never a crash
    it.close()
    for b in batches:
        chex.assert_shape(b["image"], (16, 16, 16, 3))
    assert it.skipped["unreadable_shard"] >= 3


# --------------------------------------------------------------------- chex at the borders


def test_tower_inputs_of_the_wrong_rank_fail_naming_the_modality_and_shape():
    with pytest.raises(
        AssertionError, match=r"tower 'image' takes inputs \[B, \.\.\., \.\.\., \.\.\.\]"
    ):
        shapes.tower_input("image", jnp.zeros((2, 16, 16)), 3, None)
    shapes.tower_input(
        "text", jnp.zeros((2, 5, 12), jnp.int32), 1, jax.random.split(jax.random.key(0), 2)
    )
    with pytest.raises(AssertionError, match="one PRNG key per example"):
        shapes.tower_input(
            "text", jnp.zeros((2, 12), jnp.int32), 1, jax.random.split(jax.random.key(0), 3)
        )


def test_term_inputs_must_be_rows_of_one_width():
    x, y = jnp.zeros((4, 8)), jnp.zeros((4, 6))
    with pytest.raises(
        AssertionError, match=r"objective 'image_text': image .* and text .* same width"
    ):
        shapes.term_inputs("image_text", "image", x, "text", y, jnp.ones(()), jnp.zeros(()))
    with pytest.raises(AssertionError, match="floating point"):
        shapes.term_inputs("t", "a", x.astype(jnp.int32), "b", x, jnp.ones(()), jnp.zeros(()))


def test_a_bucket_that_does_not_exist_is_refused_at_start(gcs):
    from mmjax import validate

    with pytest.raises(validate.WorkdirError, match="gs://no-such-bucket/run: cannot write"):
        validate.check_workdir("gs://no-such-bucket/run")
    validate.check_workdir("gs://bkt/errors-test-run")  # the bucket that exists takes it
