"""Workdirs of the two-tower mmjax (before multi-tower models): refused with the way out,
upgraded by tools/upgrade_checkpoint.py, then resumed."""

import json
import math
import pathlib
import re
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.sharding import NamedSharding, PartitionSpec

from mmjax import checkpoint_files
from mmjax import config as config_lib
from mmjax import state as state_lib
from mmjax.checkpoint import Checkpointer, CheckpointError
from mmjax.data import pipeline
from mmjax.interop import two_tower
from mmjax.parallel.mesh import make_mesh
from mmjax.train import loop
from tests.helpers import REPO, cli_env, tiny_config

FIXTURES = pathlib.Path(__file__).parent / "fixtures"


def two_tower_tree(p: dict) -> dict:
    """The two-tower layout of a multi-tower tree, written out by hand (the reference)."""
    image, text, logits = p["image"], p["text"], p["objectives"]["image_text"]
    return {
        "image": {**image["stem"], "encoder": image["encoder"], "ln_post": image["norm"]},
        "text": {**text["stem"], "encoder": text["encoder"], "ln_final": text["norm"]},
        "image_proj": image["proj"],
        "text_proj": text["proj"],
        "t": logits["t"],
    }


def two_tower_config_json(config) -> dict:
    """The config.json the two-tower code wrote for the run `config` describes."""
    c = json.loads(config.to_json_best_effort())
    towers, term = c["model"].pop("towers"), c.pop("objectives")["image_text"]
    drop = ("type", "share", "dtype", "remat", "mean", "std")
    for name in ("image", "text"):
        c["model"][name] = {k: v for k, v in towers[name].items() if k not in drop}
    c["model"] |= dict(name="two_tower", remat=False)
    c["model"] |= {k: term[k] for k in ("temperature_init", "max_scale", "bias_init")}
    c["loss"] = dict(name=term["loss"], tile_size=1024, chunk_size=1024)
    modalities = c["data"].pop("modalities")
    image, text = modalities["image"], modalities["text"]
    c["data"] |= dict(image_size=image["size"], tokenizer=text["tokenizer"])
    c["data"] |= dict(tokenizer_model=text["tokenizer_model"], text_key="txt")
    c["data"] |= dict(image_key="jpg;jpeg;png;webp", decoder="auto", resizer="auto")
    c["data"] |= dict(crop_scale=image["crop_scale"], crop_ratio=image["crop_ratio"])
    return c


def test_two_tower_workdir_is_refused_then_upgraded_and_resumed(tmp_path):
    """A checkpoint saved as the two-tower code saved it (a TrainState of the old tree with
    its optax state, and the data position) fails to restore, saying how to upgrade; the
    tool moves every array (parameters and Adam moments) to its new place bitwise and
    rewrites config.json; training resumes from the upgraded step."""
    config = tiny_config(total_steps=5, ckpt_every=100)
    workdir, ckpt_dir = tmp_path / "run", tmp_path / "run" / "checkpoints"
    mesh = make_mesh(config.mesh)  # the 8 test devices; the tool runs on 1
    built = state_lib.build(config, mesh)
    # Random parameters (t at CLIP's start, below the cap) and the optimizer state after
    # one AdamW update from random gradients: arrays that tell the leaves apart.
    rng = np.random.default_rng(0)
    normal = lambda scale: lambda x: scale * rng.normal(size=x.shape).astype(np.float32)
    params = jax.tree.map(normal(0.02), built.abstract.params)
    params["objectives"]["image_text"]["t"] = np.float32(math.log(1 / 0.07))
    grads = jax.tree.map(normal(1.0), params)
    old = two_tower_tree(params)
    adam = jax.jit(lambda p, g: built.tx.update(g, built.tx.init(p), p)[1])
    old_opt = jax.device_get(adam(old, two_tower_tree(grads)))
    old_state = state_lib.TrainState(
        step=jnp.int32(3),
        params=old,
        opt_state=old_opt,
        skipped=jnp.int32(0),
        skipped_in_a_row=jnp.int32(0),
    )
    old_state = jax.device_put(old_state, NamedSharding(mesh, PartitionSpec()))  # replicated
    data_iter = pipeline.train_iterator(config, 0, 1)
    for _ in range(3):
        next(data_iter)
    ckpt = Checkpointer(str(ckpt_dir), 100, 3)
    ckpt.save(3, old_state, data_iter)
    ckpt.close()
    (workdir / "config.json").write_text(json.dumps(two_tower_config_json(config)))

    reader = Checkpointer(str(ckpt_dir), read_only=True)
    hint = "written by mmjax before multi-tower models: run python tools/upgrade_checkpoint.py"
    with pytest.raises(CheckpointError, match=re.escape(f"{hint} --workdir={workdir} ")):
        reader.restore_newest(built.abstract, None)
    reader.close()

    result = subprocess.run(
        [sys.executable, str(REPO / "tools" / "upgrade_checkpoint.py"), f"--workdir={workdir}"],
        env=cli_env(1),
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert "Upgraded steps [3]" in result.stdout
    assert json.loads((workdir / "config.json").read_text()) == json.loads(
        config.to_json_best_effort()
    )
    assert (ckpt_dir / "3" / "state.two_tower").is_dir()
    assert (workdir / "config.two_tower.json").is_file()
    assert checkpoint_files.check_files(str(ckpt_dir / "3")) == []  # its checksums: the new files

    reader = Checkpointer(str(ckpt_dir), read_only=True)
    restored, with_data = reader.restore(3, built.abstract, pipeline.train_iterator(config, 0, 1))
    reader.close()
    assert with_data and int(restored.step) == 3
    # The parameters are the originals; the moments, taken back to the old layout by the
    # hand-written map, are the saved ones.
    adam_state, saved_adam = restored.opt_state[1][0], old_opt[1][0]
    pairs = [(restored.params, params), (adam_state.count, saved_adam.count)]
    pairs += [
        (two_tower_tree(getattr(adam_state, m)), getattr(saved_adam, m)) for m in ("mu", "nu")
    ]
    for got, ref in pairs:
        got = jax.device_get(got)
        assert jax.tree.structure(got) == jax.tree.structure(ref)
        for (path, a), b in zip(jax.tree_util.tree_leaves_with_path(got), jax.tree.leaves(ref)):
            np.testing.assert_array_equal(a, b, err_msg=jax.tree_util.keystr(path))

    loop.train(config, str(workdir))
    after = Checkpointer(str(ckpt_dir), read_only=True)
    assert after.all_steps() == [3, 5]
    trained = after.restore_params(5, built.abstract.params, as_numpy=True)
    after.close()
    assert any(np.any(a != b) for a, b in zip(jax.tree.leaves(trained), jax.tree.leaves(params)))


def test_a_demo_config_json_of_the_two_tower_code_becomes_todays_demo_config():
    """config.json written by the two-tower mmjax for configs/demo.py (the fixture) is, once
    upgraded, exactly the config today's configs/demo.py gives with the same overrides."""
    saved = json.loads((FIXTURES / "two_tower_demo_config.json").read_text())
    upgraded, dropped = two_tower.upgrade_config(saved)
    overrides = {
        "total_steps": 6,
        "ckpt_every": 3,
        "keep_ckpts": 2,
        "batch_size": 32,
        "log_every": 1,
        "schedule.warmup_steps": 2,
        "data.num_threads": 1,
        "evals.zeroshot.every": 0,
        "evals.retrieval.every": 0,
        "evals.knn.every": 0,
    }
    today = config_lib.load_config(str(REPO / "configs" / "demo.py"), overrides)
    assert dropped == []
    assert json.loads(upgraded.to_json_best_effort()) == json.loads(today.to_json_best_effort())


def test_config_upgrade_moves_every_renamed_field():
    old = {
        "model": {
            "name": "two_tower",
            "remat": True,
            "temperature_init": 1.5,
            "max_scale": 50.0,
            "bias_init": -10.0,
            "image": {"variant": "S/16", "pool": "map", "pre_norm": True},
            "text": {"width": 256, "context_length": 64},
        },
        "loss": {"name": "sigmoid_ring", "tile_size": 256, "chunk_size": 128},
        "data": {
            "image_size": 64,
            "tokenizer": "sentencepiece",
            "tokenizer_model": "spm.model",
            "image_key": "png",
            "text_key": "caption",
            "crop_scale": [0.5, 1.0],
            "crop_ratio": [0.8, 1.25],
            "decoder": "pil",
        },
        "gone": 1,
    }
    c, dropped = two_tower.upgrade_config(old)
    term = c.objectives.image_text
    assert (term.loss, term.tile_size, term.chunk_size) == ("sigmoid_ring", 256, 128)
    assert tuple(term.modalities) == ("image", "text")
    assert (term.temperature_init, term.max_scale, term.bias_init) == (1.5, 50.0, -10.0)
    assert c.model.remat == "full"
    image, text = c.model.towers.image, c.model.towers.text
    assert (image.type, image.variant, image.pool, image.pre_norm) == ("vit", "S/16", "map", True)
    assert (text.type, text.width, text.context_length) == ("text", 256, 64)
    img, txt = c.data.modalities.image, c.data.modalities.text
    assert (img.size, img.key, img.decoder) == (64, "png", "pil")
    assert (img.crop_scale, img.crop_ratio) == ((0.5, 1.0), (0.8, 1.25))
    assert (txt.tokenizer, txt.tokenizer_model, txt.key) == (
        "sentencepiece",
        "spm.model",
        "caption",
    )
    assert dropped == ["gone"]


def test_t_above_the_cap_is_lowered_to_it_and_the_scale_is_unchanged():
    """The two-tower forward pass used min(exp(t), max_scale): t above log(max_scale) is
    lowered to it; t below stays bitwise."""
    leaf = np.zeros(2, np.float32)
    tree = lambda t: {
        "image": {"patch_embed": leaf, "pos_embed": leaf, "encoder": leaf, "ln_post": leaf},
        "text": {"token_embed": leaf, "pos_embed": leaf, "encoder": leaf, "ln_final": leaf},
        "image_proj": leaf,
        "text_proj": leaf,
        "t": np.float32(t),
        "b": np.float32(-10.0),
    }
    high = two_tower.upgrade_params(tree(5.0))
    assert two_tower.clamp_scale(high, "image_text", 100.0)
    new_t = high["objectives"]["image_text"]["t"]
    np.testing.assert_allclose(math.exp(float(new_t)), min(math.exp(5.0), 100.0), rtol=1e-6)
    assert high["objectives"]["image_text"]["b"] == np.float32(-10.0)
    low = two_tower.upgrade_params(tree(2.0))
    assert not two_tower.clamp_scale(low, "image_text", 100.0)
    assert low["objectives"]["image_text"]["t"] == np.float32(2.0)
    with pytest.raises(ValueError, match=r"Unexpected entries \['extra'\]"):
        two_tower.upgrade_params({**tree(2.0), "extra": leaf})
