"""Configs: arg parsing, locked fields, validation messages, mesh shapes, recipes."""

import math

import jax
import ml_collections
import numpy as np
import pytest

from mmjax import config as config_lib
from mmjax import optim, state
from mmjax import params as params_lib
from mmjax.models.vit import decode_variant
from mmjax.parallel.mesh import mesh_shape
from tests.helpers import param_shapes


def load(path: str, arg: str | None = None) -> ml_collections.ConfigDict:
    return config_lib.load_config(f"{path}:{arg}" if arg else path)


def test_parse_arg_casts_and_rejects_unknown_keys():
    arg = config_lib.parse_arg("runlocal,res=64", runlocal=False, res=224)
    assert arg.runlocal is True and arg.res == 64
    with pytest.raises(ValueError, match="Unknown config arg 'rez'"):
        config_lib.parse_arg("rez=64", res=224)


def test_recipes_are_locked_against_typos():
    c = load("configs/demo.py")
    with pytest.raises(AttributeError):
        c.optim.learning_rate = 1.0
    with pytest.raises(TypeError):
        c.batch_size = "big"


@pytest.mark.parametrize(
    "field, value, message",
    [
        ("batch_size", 100, "not divisible by the 8 devices"),
        ("total_steps", 0, "total_steps: must be positive"),
        ("schedule.warmup_steps", 5000, "exceeds total_steps"),
    ],
)
def test_check_names_the_field_to_change(field, value, message):
    c = load("configs/demo.py")
    parent, _, leaf = field.rpartition(".")
    (c[parent] if parent else c)[leaf] = value
    with pytest.raises(config_lib.ConfigError, match=message):
        config_lib.check(c, num_devices=8, num_processes=1)


def test_mesh_shape_fills_the_minus_one_axis():
    m = ml_collections.ConfigDict(dict(data=-1, fsdp=2, tensor=1))
    assert mesh_shape(m, 8) == (4, 2, 1)
    with pytest.raises(ValueError, match="does not divide 8 devices"):
        mesh_shape(ml_collections.ConfigDict(dict(data=-1, fsdp=3, tensor=1)), 8)
    with pytest.raises(ValueError, match="uses 4 devices but 8"):
        mesh_shape(ml_collections.ConfigDict(dict(data=2, fsdp=2, tensor=1)), 8)


# ---- Recipes against numbers typed from their sources (never from the config files). ----

# The CLIP paper (Radford et al. 2021), Appendix F, Table 19: common CLIP hyperparameters.
CLIP_COMMON = dict(
    batch=32768,
    vocab=49408,
    epochs=32,
    max_temperature=100.0,
    weight_decay=0.2,
    warmup=2000,
    b1=0.9,
    b2=0.98,  # ViT (ResNets: 0.999)
    eps=1e-6,  # ViT (ResNets: 1e-8)
)
CLIP_PAIRS = 400_000_000  # WIT, Sec. 2.2
# Table 21: CLIP-ViT hyperparameters (resolution 224 for both).
CLIP_VIT = {
    "B/16": dict(lr=5e-4, embed=512, layers=12, width=768, heads=12, t_width=512, t_heads=8),
    "L/14": dict(lr=4e-4, embed=768, layers=24, width=1024, heads=16, t_width=768, t_heads=12),
}
# open_clip's docs/model_profile.csv: parameters in millions (total, image, text).
OPEN_CLIP_PROFILE = {
    "B/32": (151.28, 87.85, 63.43),
    "B/16": (149.62, 86.19, 63.43),
    "L/14": (427.62, 303.97, 123.65),
}
OPEN_CLIP_B16_PARAMS = 149_620_737  # open_clip.create_model("ViT-B-16") parameter count


def millions(c) -> tuple[float, float, float]:
    """(total, image, text) parameters in millions, to open_clip's two decimals."""
    shapes = param_shapes(c)
    parts = (shapes, shapes["image"], shapes["text"])
    return tuple(round(state.count_params(p) / 1e6, 2) for p in parts)


def check_clip_vit(c, variant: str) -> None:
    row = CLIP_VIT[variant]
    image, text = c.model.towers.image, c.model.towers.text
    size, _ = decode_variant(image.variant)
    assert image.variant == variant
    assert (size.depth, size.width, size.num_heads) == (row["layers"], row["width"], row["heads"])
    assert (text.depth, text.width, text.num_heads) == (12, row["t_width"], row["t_heads"])
    assert text.mlp_dim == 4 * row["t_width"] and text.context_length == 77
    assert text.vocab_size == CLIP_COMMON["vocab"] and c.model.embed_dim == row["embed"]
    assert image.pre_norm and not image.patch_bias  # open_clip / OpenAI: ln_pre, no bias
    assert c.optim.lr == row["lr"]


def test_clip_vitb_recipe_is_the_papers():
    c = load("configs/clip_vitb.py")
    check_clip_vit(c, "B/16")
    assert c.data.modalities.image.size == 224 and c.model.towers.text.causal
    assert c.batch_size == CLIP_COMMON["batch"]
    assert c.total_steps * c.batch_size == pytest.approx(
        CLIP_COMMON["epochs"] * CLIP_PAIRS, rel=1e-4
    )
    assert c.schedule.warmup_steps == CLIP_COMMON["warmup"] and c.schedule.name == "warmup_cosine"
    assert (c.optim.b1, c.optim.b2, c.optim.eps) == (
        CLIP_COMMON["b1"],
        CLIP_COMMON["b2"],
        CLIP_COMMON["eps"],
    )
    assert c.optim.weight_decay == CLIP_COMMON["weight_decay"] and c.optim.grad_clip == 0
    term = c.objectives.image_text
    assert term.loss == "softmax" and term.max_scale == CLIP_COMMON["max_temperature"]
    assert term.temperature_init == pytest.approx(math.log(1 / 0.07))  # Sec. 2.5
    local = load("configs/clip_vitb.py", "runlocal")
    assert local.model.towers.image.variant == "B/16" and local.batch_size < 100


def test_clip_vitb_has_open_clips_parameter_count_exactly():
    c = load("configs/clip_vitb.py")
    shapes = param_shapes(c)
    total = state.count_params(shapes)
    print(f"clip_vitb parameters: {total:,}")
    assert total == OPEN_CLIP_B16_PARAMS
    towers = tuple(round(state.count_params(shapes[t]) / 1e6, 2) for t in ("image", "text"))
    assert towers == OPEN_CLIP_PROFILE["B/16"][1:]


def open_clip_no_decay(width: int, depth: int, mlp: int, vision: bool) -> int:
    """Parameters open_clip's main.py leaves undecayed (p.ndim < 2, or "ln"/"bias" in the
    name) in one tower of its ViT CLIP, counted from the architecture by hand."""
    per_block = 2 * width + 3 * width + width + 2 * width + mlp + width  # ln_1, in/out, ln_2, mlp
    extra = width + 2 * width + 2 * width if vision else 2 * width  # class, ln_pre, ln_post
    return depth * per_block + extra


def test_clip_vitb_decays_the_tensors_open_clip_decays():
    c = load("configs/clip_vitb.py")
    shapes = param_shapes(c)
    mults = optim.wd_multipliers(c.optim)(shapes)
    sizes = dict(
        zip(params_lib.names(shapes), (int(np.prod(x.shape)) for x in jax.tree.leaves(shapes)))
    )
    by_name = dict(zip(params_lib.names(shapes), jax.tree.leaves(mults)))
    decayed = sum(n for name, n in sizes.items() if by_name[name] > 0)
    undecayed = (
        open_clip_no_decay(768, 12, 3072, vision=True)
        + open_clip_no_decay(512, 12, 2048, vision=False)
        + 1  # logit_scale
    )
    assert decayed == OPEN_CLIP_B16_PARAMS - undecayed
    for name in ("image/stem/pos_embed", "text/stem/pos_embed", "text/stem/token_embed/embedding"):
        assert by_name[name] == 1.0, name  # 2-D in open_clip, so decayed
    assert by_name["image/stem/cls"] == 0.0  # open_clip's class_embedding is 1-D


def test_clip_vitl14_recipe_is_the_papers_and_open_clips():
    c = load("configs/clip_vitl14.py")
    check_clip_vit(c, "L/14")
    assert c.batch_size == CLIP_COMMON["batch"] and c.schedule.warmup_steps == CLIP_COMMON["warmup"]
    assert millions(c) == OPEN_CLIP_PROFILE["L/14"]


# DataComp (Gadre et al. 2023), its repository's scale_configs.py and train.py (which run
# open_clip's trainer with open_clip's defaults: wd 0.2, beta1 0.9, eps 1e-6, cosine).
DATACOMP = {
    "small": dict(model="B/32", samples=12_800_000, batch=4096, lr=5e-4, warmup=500, b2=0.98),
    "medium": dict(model="B/32", samples=128_000_000, batch=4096, lr=5e-4, warmup=500, b2=0.98),
    "large": dict(model="B/16", samples=1_280_000_000, batch=8192, lr=5e-4, warmup=500, b2=0.98),
    "xlarge": dict(
        model="L/14", samples=12_800_000_000, batch=90112, lr=1e-3, warmup=10_000, b2=0.95
    ),
}


@pytest.mark.parametrize("scale", list(DATACOMP))
def test_datacomp_scales(scale):
    want = DATACOMP[scale]
    c = load("configs/datacomp.py", f"scale={scale}")
    assert c.model.towers.image.variant == want["model"]
    assert c.batch_size == want["batch"] and c.optim.lr == want["lr"]
    assert abs(c.total_steps * c.batch_size - want["samples"]) < c.batch_size
    assert c.schedule.warmup_steps == want["warmup"] and c.schedule.name == "warmup_cosine"
    assert (c.optim.b1, c.optim.b2, c.optim.eps) == (0.9, want["b2"], 1e-6)
    assert c.optim.weight_decay == 0.2 and c.optim.grad_clip == 0
    assert c.data.modalities.image.size == 224 and c.model.remat == "full"
    if scale == "small":
        assert millions(c) == OPEN_CLIP_PROFILE["B/32"]
    local = load("configs/datacomp.py", f"scale={scale},runlocal")
    assert local.batch_size < 100


# SigLIP (Zhai et al. 2023): Sec. 3 initialisation, Sec. 4 training; big_vision's
# SigLIP_demo.ipynb model configs of the released WebLI checkpoints.
SIGLIP = dict(t=math.log(10), b=-10.0, batch=32768, lr=1e-3, wd=1e-4, spm_pieces=32_000)
BIG_VISION = {
    "B/16": dict(width=768, depth=12, heads=12, mlp=3072, embed=768, seqlen=64),
    "So400m/14": dict(width=1152, depth=27, heads=16, mlp=4304, embed=1152, seqlen=16),
}


@pytest.mark.parametrize(
    "path, variant", [("configs/siglip_vitb.py", "B/16"), ("configs/siglip_so400m.py", "So400m/14")]
)
def test_siglip_recipes_are_the_papers_and_big_visions(path, variant):
    want = BIG_VISION[variant]
    c = load(path, "spm=gs://bucket/c4_en.model")
    term = c.objectives.image_text
    assert term.loss == "sigmoid" and term.bias_init == SIGLIP["b"]
    assert term.temperature_init == pytest.approx(SIGLIP["t"])
    assert c.batch_size == SIGLIP["batch"]
    assert (c.optim.lr, c.optim.weight_decay) == (SIGLIP["lr"], SIGLIP["wd"])
    image, text = c.model.towers.image, c.model.towers.text
    size, _ = decode_variant(image.variant)
    assert image.variant == variant and image.pool == "map"
    assert (size.width, size.depth, size.num_heads, size.mlp_dim) == (
        want["width"],
        want["depth"],
        want["heads"],
        want["mlp"],
    )
    # The text tower has the image tower's shape, pools its last token, sees every token.
    assert (text.width, text.depth, text.num_heads, text.mlp_dim) == (
        want["width"],
        want["depth"],
        want["heads"],
        want["mlp"],
    )
    assert text.pool == "last" and not text.causal
    assert text.context_length == want["seqlen"] and c.model.embed_dim == want["embed"]
    assert tuple(image.mean) == (0.5,) * 3 and tuple(image.std) == (0.5,) * 3  # [-1, 1]
    spm = c.data.modalities.text
    assert spm.tokenizer == "sentencepiece" and spm.tokenizer_model == "gs://bucket/c4_en.model"
    assert text.vocab_size == SIGLIP["spm_pieces"] + 3  # pieces, shifted past padding, + 2
    local = load(path, "runlocal")
    assert local.batch_size == 16 and local.objectives.image_text.loss == "sigmoid"
    with pytest.raises(AttributeError):  # still locked against typos
        local.optim.learning_rate = 1.0
