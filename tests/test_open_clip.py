"""open_clip interop, checked against open_clip itself (randomly initialised models).

Needs the interop extra (torch, open_clip); those tests skip without it, and fail instead
when MMJAX_REQUIRE_INTEROP is set (CI installs the extra and sets it). The checks of which
options convert, and of the parameter trees, need neither.
"""

import functools
import importlib
import json
import os
import pathlib
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from mmjax import config as config_lib
from mmjax import models, state
from mmjax.data.modalities import example_specs
from mmjax.interop import checkpoints
from mmjax.interop import open_clip as oc
from mmjax.models.vit import CLIP_MEAN
from tests.helpers import tiny_config

REPO = pathlib.Path(__file__).resolve().parents[1]
TOL = 1e-6  # max abs difference of unit-norm float32 embeddings (measured: about 2e-7)
REQUIRED = bool(os.environ.get("MMJAX_REQUIRE_INTEROP"))

# A small ViT CLIP no built-in size matches: exercises explicit sizes, head width 32,
# no ln_pre, a biased text projection and SigLIP's logit bias.
TINY_CFG = {
    "embed_dim": 24,
    "quick_gelu": True,
    "init_logit_bias": -10.0,
    "vision_cfg": {
        "image_size": 32,
        "layers": 2,
        "width": 64,
        "head_width": 32,
        "patch_size": 8,
        "no_ln_pre": True,
    },
    "text_cfg": {
        "context_length": 12,
        "vocab_size": 300,
        "width": 48,
        "heads": 3,
        "layers": 2,
        "proj_bias": True,
    },
}


def _import_open_clip():
    """open_clip, or a skip. Tolerates torchvision's CUDA wheel beside a CPU torch.

    open_clip imports torchvision at import time (for its image transforms) but needs
    none of its compiled ops to build or run a model. The PyPI torchvision wheel is built
    against CUDA torch: beside the CPU torch its ops library does not load, and its import
    then fails registering two of those ops. Declaring them first lets it import.
    """
    torch = _import_or_skip("torch")
    try:
        import torchvision  # noqa: F401
    except ImportError:
        if REQUIRED:
            raise
        pytest.skip("torchvision is not installed")
    except RuntimeError as error:
        if "torchvision::nms" not in str(error):
            raise
        for name in [m for m in sys.modules if m.split(".")[0] == "torchvision"]:
            del sys.modules[name]
        global _TORCHVISION_OPS
        _TORCHVISION_OPS = torch.library.Library("torchvision", "DEF")
        _TORCHVISION_OPS.define("nms(Tensor dets, Tensor scores, float iou_threshold) -> Tensor")
        _TORCHVISION_OPS.define("qnms(Tensor dets, Tensor scores, float iou_threshold) -> Tensor")
    return _import_or_skip("open_clip")


_TORCHVISION_OPS = None


def _import_or_skip(module: str):
    """The module; without it a skip, or with MMJAX_REQUIRE_INTEROP the ImportError."""
    return importlib.import_module(module) if REQUIRED else pytest.importorskip(module)


def _mmjax_config(arch: oc.Arch):
    config = config_lib.base()
    checkpoints.set_fields(config, oc.mmjax_fields(arch))
    return config


def _inputs(arch: oc.Arch, batch: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Normalised images [b, 3, h, w] and token ids whose argmax is an end token."""
    rng = np.random.default_rng(seed)
    images = rng.normal(size=(batch, 3, arch.image_size, arch.image_size)).astype(np.float32)
    tokens = np.zeros((batch, arch.context_length), np.int64)
    for i in range(batch):
        n = rng.integers(2, arch.context_length - 1)
        tokens[i, :n] = rng.integers(1, arch.vocab_size - 1, n)
        tokens[i, n] = arch.vocab_size - 1
    return images, tokens


def _open_clip_embeddings(model, images: np.ndarray, tokens: np.ndarray):
    import torch

    with torch.no_grad():
        image = model.encode_image(torch.from_numpy(images), normalize=True)
        text = model.encode_text(torch.from_numpy(tokens), normalize=True)
    return image.numpy(), text.numpy()


def _mmjax_embeddings(config, params, images: np.ndarray, tokens: np.ndarray):
    model = models.build_model(config.model, config.objectives)
    inputs = {
        "image": jnp.asarray(images.transpose(0, 2, 3, 1)),  # NCHW -> NHWC, normalised
        "text": jnp.asarray(tokens, jnp.int32),
    }
    out = jax.jit(model.apply)({"params": params}, inputs)
    return np.asarray(out["image"]["embedding"]), np.asarray(out["text"]["embedding"])


def _abstract_params(config):
    model = models.build_model(config.model, config.objectives)
    dummy = state.dummy_inputs(example_specs(config))
    return state.strip_boxes(jax.eval_shape(lambda: model.init(jax.random.key(0), dummy)))["params"]


def _numpy_state_dict(model) -> dict[str, np.ndarray]:
    return {k: v.detach().numpy() for k, v in model.state_dict().items()}


def _assert_trees_equal(a, b) -> None:
    assert jax.tree.structure(a) == jax.tree.structure(b)
    for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)):
        np.testing.assert_array_equal(np.asarray(x), np.asarray(y), strict=True)


@functools.lru_cache(maxsize=1)
def _b32(name: str):
    """A randomly initialised open_clip ViT-B-32 (cached: the export test reuses it)."""
    open_clip = _import_open_clip()
    import torch

    torch.manual_seed(0)
    return open_clip.create_model(name).eval()


def test_b32_export_is_bitwise_and_loads_in_open_clip_by_name_and_path(tmp_path):
    """OpenAI-named weights from a torch file -> mmjax -> a file open_clip loads unchanged."""
    open_clip = _import_open_clip()
    import torch

    name = "ViT-B-32-quickgelu"
    reference = _b32(name)
    torch.save(reference.state_dict(), tmp_path / "weights.bin")
    arch = oc.arch_from_open_clip(oc.model_cfg_from_name_or_file(name))
    params = oc.params_from_state_dict(oc.load_state_dict(str(tmp_path / "weights.bin")), arch)
    exported = oc.state_dict_from_params(params)
    _assert_trees_equal(exported, _numpy_state_dict(reference))
    _assert_trees_equal(oc.params_from_state_dict(exported, arch), params)
    oc.save_state_dict(exported, str(tmp_path / "exported.safetensors"))
    loaded = open_clip.create_model(name, pretrained=str(tmp_path / "exported.safetensors"))
    _assert_trees_equal(_numpy_state_dict(loaded), _numpy_state_dict(reference))


@pytest.mark.parametrize("name", ["ViT-B-32-quickgelu", "ViT-B-32"])
def test_imported_b32_embeds_like_open_clip(name):
    open_clip = _import_open_clip()
    reference = _b32(name)
    arch = oc.arch_from_open_clip(oc.model_cfg_from_name_or_file(name))
    params = oc.params_from_state_dict(_numpy_state_dict(reference), arch)
    images = np.random.default_rng(0).normal(size=(2, 3, 224, 224)).astype(np.float32)
    texts = ["a photo of a cat", "a diagram of two dogs"]
    tokens = open_clip.get_tokenizer(name)(texts).numpy()
    want = _open_clip_embeddings(reference, images, tokens)
    got = _mmjax_embeddings(_mmjax_config(arch), params, images, tokens)
    for g, w in zip(got, want):
        assert np.abs(g - w).max() < TOL, np.abs(g - w).max()


def _run_python(*args: str) -> str:
    """Runs python on one CPU device, as a user would; returns its stdout."""
    env = dict(os.environ, PYTHONPATH=str(REPO), JAX_PLATFORMS="cpu", XLA_FLAGS="")
    result = subprocess.run(
        [sys.executable, *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr[-4000:]
    return result.stdout


def _run_tool(*args: str) -> str:
    return _run_python(str(REPO / "tools" / "convert_open_clip.py"), *args)


def test_tool_import_then_export_is_bitwise_and_loads_in_open_clip(tmp_path):
    open_clip = _import_open_clip()
    import torch
    from safetensors.numpy import load_file

    torch.manual_seed(1)
    reference = open_clip.model.CLIP(**TINY_CFG).eval()
    original = _numpy_state_dict(reference)
    torch.save(
        {"state_dict": {f"module.{k}": v for k, v in reference.state_dict().items()}},
        tmp_path / "epoch_1.pt",
    )  # an open_clip training checkpoint, DDP names
    (tmp_path / "tiny.json").write_text(json.dumps(TINY_CFG))
    workdir, out = tmp_path / "run", tmp_path / "export"

    _run_tool(
        "import",
        f"--checkpoint={tmp_path / 'epoch_1.pt'}",
        f"--model={tmp_path / 'tiny.json'}",
        f"--workdir={workdir}",
    )
    config_file = workdir / "imported_config.py"
    _run_tool("export", f"--workdir={workdir}", f"--out={out}", f"--config={config_file}")

    # Both directions are the identity: open_clip -> mmjax -> open_clip, and the mmjax
    # checkpoint's parameters -> open_clip -> mmjax.
    exported = load_file(str(out / "open_clip_model.safetensors"))
    _assert_trees_equal(exported, original)
    arch = oc.arch_from_open_clip(TINY_CFG)
    config = _mmjax_config(arch)
    params, step = checkpoints.restore_params(config, str(workdir))
    assert step == 0
    _assert_trees_equal(oc.params_from_state_dict(exported, arch), params)

    # The folder loads in open_clip as CLIP_benchmark loads it, and computes the same.
    loaded, _, preprocess = open_clip.create_model_and_transforms(f"local-dir:{out}")
    loaded.eval()
    assert tuple(preprocess.transforms[-1].mean) == CLIP_MEAN  # mmjax's normalisation
    assert loaded.logit_bias.item() == reference.logit_bias.item()
    images, tokens = _inputs(arch, batch=3)
    want = _open_clip_embeddings(reference, images, tokens)
    for g, w in zip(_open_clip_embeddings(loaded, images, tokens), want):
        np.testing.assert_array_equal(g, w)
    for g, w in zip(_mmjax_embeddings(config, params, images, tokens), want):
        assert np.abs(g - w).max() < TOL, np.abs(g - w).max()


def test_training_starts_from_the_imported_weights(tmp_path):
    """mmjax.main restores the imported step 0 (no data item) and trains on from it: with
    a zero learning rate, the exported step 1 is the imported open_clip model bitwise."""
    open_clip = _import_open_clip()
    import torch
    from safetensors.numpy import load_file

    torch.manual_seed(2)
    reference = open_clip.model.CLIP(**TINY_CFG)
    oc.save_state_dict(_numpy_state_dict(reference), str(tmp_path / "w.safetensors"))
    (tmp_path / "tiny.json").write_text(json.dumps(TINY_CFG))
    workdir, out = tmp_path / "run", tmp_path / "export"
    _run_tool(
        "import",
        f"--checkpoint={tmp_path / 'w.safetensors'}",
        f"--model={tmp_path / 'tiny.json'}",
        f"--workdir={workdir}",
    )
    train = [
        f"--config={workdir / 'imported_config.py'}",
        f"--workdir={workdir}",
        "--config.optim.lr=0",
        "--config.total_steps=1",
        "--config.schedule.warmup_steps=0",
        "--config.batch_size=4",
        "--config.evals.zeroshot.every=0",
        "--config.data.num_threads=1",
        "--config.data.synthetic.num_eval=4",
    ]
    _run_python("-m", "mmjax.main", *train)
    exported = _run_tool("export", f"--workdir={workdir}", f"--out={out}")  # config.json
    assert "Wrote step 1 " in exported
    _assert_trees_equal(
        load_file(str(out / "open_clip_model.safetensors")), _numpy_state_dict(reference)
    )


def test_mmjax_model_with_patch_bias_exports_to_open_clip(tmp_path):
    """A model trained in mmjax (patch bias, no ln_pre) computes the same in open_clip."""
    open_clip = _import_open_clip()
    config = tiny_config(**{"model.towers.image.patch_bias": True, "model.act": "gelu"})
    model = models.build_model(config.model, config.objectives)
    dummy = state.dummy_inputs(example_specs(config))
    params = state.strip_boxes(jax.jit(model.init)(jax.random.key(3), dummy))["params"]
    rng = np.random.default_rng(4)  # a visible bias, so that folding it is tested
    params["image"]["stem"]["patch_embed"]["bias"] = rng.normal(size=(32,)).astype(np.float32)
    params = jax.tree.map(np.asarray, params)

    arch = oc.arch_from_mmjax(config)
    oc.save_state_dict(oc.state_dict_from_params(params), str(tmp_path / "w.safetensors"))
    (tmp_path / "open_clip_config.json").write_text(json.dumps(oc.open_clip_config_json(arch)))
    loaded = open_clip.create_model(f"local-dir:{tmp_path}").eval()
    images, tokens = _inputs(arch, batch=2, seed=5)
    want = _open_clip_embeddings(loaded, images, tokens)
    for g, w in zip(_mmjax_embeddings(config, params, images, tokens), want):
        assert np.abs(g - w).max() < TOL, np.abs(g - w).max()


def test_load_state_dict_reads_openai_torchscript_half_precision(tmp_path):
    """OpenAI's releases are TorchScript archives of float16 weights plus three non-weights."""
    torch = _import_or_skip("torch")

    class Tiny(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.proj = torch.nn.Linear(3, 2)
            self.register_buffer("input_resolution", torch.tensor(224))

        def forward(self, x):
            return self.proj(x)

    module = Tiny()
    torch.jit.save(torch.jit.trace(module, torch.zeros(1, 3)).half(), tmp_path / "a.pt")
    loaded = oc.load_state_dict(str(tmp_path / "a.pt"))
    assert set(loaded) == {"proj.weight", "proj.bias"}
    want = module.proj.weight.detach().half().float().numpy()
    np.testing.assert_array_equal(loaded["proj.weight"], want, strict=True)


def test_options_that_do_not_convert_fail_by_name():
    cfg = oc.model_cfg_from_name_or_file("ViT-B-16")
    cfg["vision_cfg"]["attentional_pool"] = True
    cfg["text_cfg"]["pool_type"] = "last"
    with pytest.raises(ValueError, match=r"vision_cfg.attentional_pool=True.*text_cfg.pool_type"):
        oc.arch_from_open_clip(cfg)
    with pytest.raises(ValueError, match="Unknown open_clip model 'ViT-H-14'"):
        oc.model_cfg_from_name_or_file("ViT-H-14")
    with pytest.raises(ValueError, match=r"model.towers.image.pool='gap'"):
        oc.arch_from_mmjax(tiny_config(**{"model.towers.image.pool": "gap"}))


def test_model_shapes_open_clip_cannot_express_fail_by_name():
    """open_clip's CLIP is two towers (image: vit, text: text) and one term between them."""
    config = tiny_config()
    with config.unlocked():
        config.model.towers.view = config_lib.tower("vit", variant="mu/8", share="image")
        config.objectives.views = config_lib.objective("softmax", ("image", "view"))
    with pytest.raises(ValueError, match=r"model.towers=\['image', 'text', 'view'\].*objectives="):
        oc.arch_from_mmjax(config)
    config = tiny_config()
    with config.unlocked():
        config.model.towers.image.type = "text"
    with pytest.raises(ValueError, match=r"model.towers.image.type='text' \('vit' only\)"):
        oc.arch_from_mmjax(config)
    leaf = np.zeros(())
    two_terms = {"objectives": {"a": {"t": leaf}, "b": {"t": leaf}}, "image": {}, "text": {}}
    with pytest.raises(ValueError, match=r"terms \['a', 'b'\]: name the one to export"):
        oc.state_dict_from_params(two_terms)


def test_converted_parameters_are_the_model_tree_and_convert_back_bitwise():
    """Without torch: an open_clip state dict of random numbers becomes exactly the tree
    the mmjax model of the imported config has (keys and shapes), logit_scale and
    logit_bias land in the image-text term, and export gives the state dict back."""
    arch = oc.arch_from_open_clip(TINY_CFG)
    rng = np.random.default_rng(0)
    sd = {k: rng.normal(size=s).astype(np.float32) for k, s in oc.state_dict_shapes(arch).items()}
    params = oc.params_from_state_dict(sd, arch)
    shapes = lambda tree: {
        jax.tree_util.keystr(k): tuple(np.shape(v)) for k, v in jax.tree.leaves_with_path(tree)
    }
    assert shapes(params) == shapes(_abstract_params(_mmjax_config(arch)))
    logits = params["objectives"]["image_text"]
    assert (logits["t"], logits["b"]) == (sd["logit_scale"], sd["logit_bias"])
    _assert_trees_equal(oc.state_dict_from_params(params), sd)


@pytest.mark.parametrize("name", ["ViT-B-16", "ViT-L-14-quickgelu"])
def test_b16_and_l14_state_dicts_and_mmjax_models_have_the_same_parameters(name):
    """open_clip's own B-16 / L-14 (on the meta device: no memory) have the keys and shapes
    the mapping expects, and the mmjax config fields build a model of the same size."""
    open_clip = _import_open_clip()
    reference = open_clip.create_model(name, device="meta")
    arch = oc.arch_from_open_clip(oc.model_cfg_from_name_or_file(name))
    shapes = oc.state_dict_shapes(arch)
    assert {k: tuple(v.shape) for k, v in reference.state_dict().items()} == shapes
    abstract = _abstract_params(_mmjax_config(arch))
    assert state.count_params(abstract) == sum(int(np.prod(s)) for s in shapes.values())
