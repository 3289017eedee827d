"""open_clip <-> mmjax architectures: both sides' model configs meet in `Arch`.

open_clip (which keeps OpenAI CLIP's names) stores a ViT CLIP as a flat state dict of
torch-layout arrays: `visual.conv1.weight` [width, 3, p, p], each attention's q, k, v as
one `in_proj_weight` [3 * width, width], MLPs as `c_fc` / `c_proj` [out, in], one key per
layer (`...resblocks.{i}...`). mmjax holds the same numbers in Flax layout: HWIO
convolution kernels, [in, out] dense kernels, attention kernels split by head, and the
layers stacked on a leading axis (the encoder is an `nn.scan`). Every conversion below
is a transpose or a reshape, so a round trip is bitwise exact.

Both sides' architecture options meet in `Arch`: `arch_from_open_clip` reads open_clip's
model config (the JSON of `open_clip/model_configs/`), `arch_from_mmjax` reads an mmjax
config. open_clip's CLIP is one mmjax shape only: an image tower named "image" (type vit),
a text tower named "text" (type text), and one objective term between them, whose t and b
are open_clip's `logit_scale` and `logit_bias`. Whatever one side cannot express exactly
fails with the option's name instead of converting into a different model. The one
approximation: a patch-embedding bias (mmjax models trained with
`model.towers.image.patch_bias=True`; open_clip has none) is folded into the position
embeddings of the patch tokens on export, which is exact up to float rounding.

torch is imported only to read or write `.pt` / `.bin` files; `.safetensors` needs only
the `safetensors` package.
"""

import dataclasses
import json
import logging
import os
from collections.abc import Mapping
from typing import Any

import ml_collections
import numpy as np

from mmjax.data.tokenizers import TOKENIZERS
from mmjax.models.vit import CLIP_MEAN, CLIP_STD, VIT_SIZES, decode_variant

StateDict = dict[str, np.ndarray]
Params = dict[str, Any]


@dataclasses.dataclass(frozen=True)
class Tower:
    width: int
    depth: int
    num_heads: int
    mlp_dim: int


@dataclasses.dataclass(frozen=True)
class Arch:
    """A ViT CLIP both codebases can build: the meeting point of their configs."""

    embed_dim: int
    quick_gelu: bool
    image: Tower
    patch_size: int
    image_size: int
    pre_norm: bool  # LayerNorm on the patch sequence (open_clip's ln_pre)
    text: Tower
    context_length: int
    vocab_size: int
    text_proj_bias: bool
    logit_bias: float | None  # SigLIP's learned bias; its init value when creating the model
    # The image normalisation the weights expect (open_clip's preprocess_cfg; CLIP's default).
    mean: tuple[float, ...] = CLIP_MEAN
    std: tuple[float, ...] = CLIP_STD

    @property
    def grid(self) -> int:
        return self.image_size // self.patch_size


def _model_cfg(embed_dim: int, layers: int, width: int, patch: int, text_width: int) -> dict:
    text_cfg = dict(context_length=77, vocab_size=49408, width=text_width, layers=12)
    text_cfg["heads"] = text_width // 64
    vision_cfg = dict(image_size=224, layers=layers, width=width, patch_size=patch)
    return dict(embed_dim=embed_dim, vision_cfg=vision_cfg, text_cfg=text_cfg)


# open_clip's built-in configs (open_clip/model_configs/*.json) of the ViT CLIPs that OpenAI
# and LAION released; NAME-quickgelu is the same with QuickGELU (the OpenAI weights).
# Other ViT CLIPs convert from their JSON (`model_cfg_from_name_or_file`).
MODEL_CONFIGS: dict[str, dict] = {
    "ViT-B-32": _model_cfg(512, 12, 768, 32, 512),
    "ViT-B-16": _model_cfg(512, 12, 768, 16, 512),
    "ViT-L-14": _model_cfg(768, 24, 1024, 14, 768),
}

CLIP_VOCAB_SIZE = 49408  # CLIP's BPE: 256 bytes, the same with </w>, 48,894 merges, 2 specials

# open_clip defaults (open_clip/model.py CLIPVisionCfg, CLIPTextCfg) of the fields we read.
_VISION_DEFAULTS = dict(
    layers=12, width=768, head_width=64, mlp_ratio=4.0, patch_size=16, image_size=224
)
_TEXT_DEFAULTS = dict(
    context_length=77, vocab_size=49408, width=512, heads=8, layers=12, mlp_ratio=4.0
)
# Fields mmjax follows whatever their value: sizes, and options that do not change the
# function computed here (dropout at training time, LayerNorm before or after taking one
# token, which tokenizer feeds the model, what else the tower returns).
_FREE = {
    "": {"embed_dim", "quick_gelu", "vision_cfg", "text_cfg", "init_logit_bias"}
    | {"init_logit_scale", "nonscalar_logit_scale"},
    "vision_cfg": set(_VISION_DEFAULTS)
    | {"no_ln_pre", "patch_dropout", "final_ln_after_pool", "output_tokens"},
    "text_cfg": set(_TEXT_DEFAULTS)
    | {"proj_bias", "final_ln_after_pool", "output_tokens", "pad_id", "eos_id"},
}
_CUSTOM_BLOCK = dict(
    block_type=None,
    qk_norm=False,
    scaled_cosine_attn=False,
    scale_heads=False,
    scale_attn_inner=False,
    scale_attn=False,
    scale_fc=False,
    ls_init_value=None,
    act_kwargs=None,
    norm_kwargs=None,
)
# Fields mmjax supports only at these values (its default layers and pooling).
_FIXED = {
    "": {"custom_text": False},
    "vision_cfg": dict(
        _CUSTOM_BLOCK,
        attentional_pool=False,
        pos_embed_type="learnable",
        pool_type="tok",
        timm_model_name=None,
    ),
    "text_cfg": dict(
        _CUSTOM_BLOCK,
        embed_cls=False,
        no_causal_mask=False,
        pool_type="argmax",
        proj_type="linear",
        hf_model_name=None,
        # Another tokenizer than CLIP's BPE (mmjax's data.modalities.text.tokenizer="clip_bpe").
        hf_tokenizer_name=None,
        tokenizer_mode=None,
        tokenizer_kwargs=None,
    ),
}


def _json(path: str) -> dict:
    with open(path) as f:
        return json.load(f)


def model_cfg_from_name_or_file(name_or_path: str) -> dict:
    """open_clip's model config for a built-in name (`ViT-B-32[-quickgelu]`) or a JSON file.

    The JSON may be a model config (`open_clip/model_configs/*.json`) or an
    `open_clip_config.json` holding one under "model_cfg".
    """
    if os.path.isfile(name_or_path):
        cfg = _json(name_or_path)
        return dict(cfg.get("model_cfg", cfg))
    base = name_or_path.removesuffix("-quickgelu")
    if base not in MODEL_CONFIGS:
        known = ", ".join(f"{n}[-quickgelu]" for n in MODEL_CONFIGS)
        raise ValueError(
            f"Unknown open_clip model {name_or_path!r}; known: {known}. For another ViT CLIP"
            " pass the path of its open_clip model config JSON."
        )
    cfg = {**MODEL_CONFIGS[base], "quick_gelu": name_or_path != base}
    return {k: dict(v) if isinstance(v, dict) else v for k, v in cfg.items()}


def preprocess_cfg_from_name_or_file(name_or_path: str) -> dict:
    """The "preprocess_cfg" of an `open_clip_config.json`; {} otherwise (open_clip then
    normalises with OpenAI's mean and std, as it does for the built-in names)."""
    if os.path.isfile(name_or_path):
        return dict(_json(name_or_path).get("preprocess_cfg", {}))
    return {}


def _per_channel(value: Any, default: tuple[float, ...]) -> tuple[float, ...]:
    if value is None:
        return default
    values = tuple(float(v) for v in (value if isinstance(value, list | tuple) else [value]))
    return values * 3 if len(values) == 1 else values


def _check_fields(model_cfg: Mapping[str, Any]) -> None:
    problems = []
    sections = {"": model_cfg}
    sections["vision_cfg"] = model_cfg.get("vision_cfg", {})
    sections["text_cfg"] = model_cfg.get("text_cfg", {})
    for name, section in sections.items():
        for key, value in section.items():
            fixed = _FIXED[name]
            if key in _FREE[name] or (key in fixed and value == fixed[key]):
                continue
            problems.append(f"{name}.{key}={value!r}".lstrip("."))
    if problems:
        raise ValueError(
            "open_clip options that mmjax cannot reproduce exactly: " + ", ".join(problems)
        )


def _mlp_dim(width: int, ratio: float) -> int:
    return int(width * ratio)  # as open_clip's ResidualAttentionBlock computes it


def arch_from_open_clip(
    model_cfg: Mapping[str, Any], preprocess_cfg: Mapping[str, Any] | None = None
) -> Arch:
    """The architecture an open_clip model config describes; fails on what mmjax lacks.

    `preprocess_cfg` (of an `open_clip_config.json`) gives the image mean and std.
    """
    _check_fields(model_cfg)
    preprocess = preprocess_cfg or {}
    v = {**_VISION_DEFAULTS, **model_cfg.get("vision_cfg", {})}
    t = {**_TEXT_DEFAULTS, **model_cfg.get("text_cfg", {})}
    size = v["image_size"]
    if isinstance(size, list | tuple):
        if len(set(size)) != 1:
            raise ValueError(f"mmjax uses square images; vision_cfg.image_size={size}.")
        size = size[0]
    if not isinstance(v["layers"], int):
        raise ValueError(f"vision_cfg.layers={v['layers']}: a ResNet, not a ViT.")
    if v["width"] % v["head_width"]:
        raise ValueError(f"vision width {v['width']} is not a multiple of {v['head_width']}.")
    bias = model_cfg.get("init_logit_bias")
    return Arch(
        embed_dim=model_cfg["embed_dim"],
        quick_gelu=bool(model_cfg.get("quick_gelu", False)),
        image=Tower(
            v["width"],
            v["layers"],
            v["width"] // v["head_width"],
            _mlp_dim(v["width"], v["mlp_ratio"]),
        ),
        patch_size=v["patch_size"],
        image_size=size,
        pre_norm=not v.get("no_ln_pre", False),
        text=Tower(t["width"], t["layers"], t["heads"], _mlp_dim(t["width"], t["mlp_ratio"])),
        context_length=t["context_length"],
        vocab_size=t["vocab_size"],
        text_proj_bias=bool(t.get("proj_bias", False)),
        logit_bias=None if bias is None else float(bias),
        mean=_per_channel(preprocess.get("mean"), CLIP_MEAN),
        std=_per_channel(preprocess.get("std"), CLIP_STD),
    )


def _ratio(tower: Tower, what: str) -> float:
    """open_clip's mlp_ratio for a tower, checked to give back the exact MLP width."""
    ratio = tower.mlp_dim / tower.width
    if _mlp_dim(tower.width, ratio) != tower.mlp_dim:
        raise ValueError(f"open_clip cannot express {what} MLP width {tower.mlp_dim}.")
    return ratio


def open_clip_model_cfg(arch: Arch) -> dict:
    """open_clip's model config (as in `open_clip/model_configs/*.json`) for `arch`."""
    vision = dict(
        image_size=arch.image_size,
        layers=arch.image.depth,
        width=arch.image.width,
        head_width=arch.image.width // arch.image.num_heads,
        mlp_ratio=_ratio(arch.image, "image"),
        patch_size=arch.patch_size,
    )
    if not arch.pre_norm:
        vision["no_ln_pre"] = True
    text = dict(
        context_length=arch.context_length,
        vocab_size=arch.vocab_size,
        width=arch.text.width,
        heads=arch.text.num_heads,
        layers=arch.text.depth,
        mlp_ratio=_ratio(arch.text, "text"),
    )
    if arch.text_proj_bias:
        text["proj_bias"] = True
    cfg: dict[str, Any] = dict(embed_dim=arch.embed_dim, vision_cfg=vision, text_cfg=text)
    if arch.quick_gelu:
        cfg["quick_gelu"] = True
    if arch.logit_bias is not None:
        cfg["init_logit_bias"] = arch.logit_bias
    return cfg


def open_clip_config_json(arch: Arch) -> dict:
    """The `open_clip_config.json` that `open_clip.create_model("local-dir:DIR")` reads.

    The preprocessing is the model's: its image tower's mean and std.
    """
    return dict(
        model_cfg=open_clip_model_cfg(arch),
        preprocess_cfg=dict(mean=list(arch.mean), std=list(arch.std)),
    )


# ------------------------------------------------------------------------ the mmjax side

# The one shape of mmjax model open_clip's CLIP is: tower names and types, and the term.
IMAGE, TEXT = "image", "text"
TOWER_TYPES = {IMAGE: "vit", TEXT: "text"}
TERM = "image_text"  # the image-text term of config.base(), which imports fill


def _vit_variant(image: Tower, patch: int) -> dict[str, Any]:
    """`model.towers.image.*` fields: a named size when one matches, explicit sizes otherwise."""
    prefix = f"model.towers.{IMAGE}"
    for name, size in VIT_SIZES.items():
        if (size.width, size.depth, size.mlp_dim, size.num_heads) == (
            image.width,
            image.depth,
            image.mlp_dim,
            image.num_heads,
        ):
            return {f"{prefix}.variant": f"{name}/{patch}"}
    return {
        f"{prefix}.variant": f"B/{patch}",
        f"{prefix}.width": image.width,
        f"{prefix}.depth": image.depth,
        f"{prefix}.mlp_dim": image.mlp_dim,
        f"{prefix}.num_heads": image.num_heads,
    }


def mmjax_fields(arch: Arch) -> dict[str, Any]:
    """Dotted fields of `config.base()` that build `arch` (for `--config.x=y` or a file).

    With them goes CLIP's BPE tokenizer, the ids open_clip's weights were trained on
    (for its 49,408-token vocabulary; a toy vocabulary keeps mmjax's default tokenizer),
    and, for weights with a logit bias (SigLIP), the sigmoid loss that learns it.
    """
    image, text, term = f"model.towers.{IMAGE}", f"model.towers.{TEXT}", f"objectives.{TERM}"
    fields = {
        "model.embed_dim": arch.embed_dim,
        "model.act": "quick_gelu" if arch.quick_gelu else "gelu",
        "model.proj_bias": arch.text_proj_bias,
        **_vit_variant(arch.image, arch.patch_size),
        f"{image}.pool": "cls",
        f"{image}.pre_norm": arch.pre_norm,
        f"{image}.patch_bias": False,
        f"{image}.mean": tuple(arch.mean),
        f"{image}.std": tuple(arch.std),
        f"{text}.width": arch.text.width,
        f"{text}.depth": arch.text.depth,
        f"{text}.mlp_dim": arch.text.mlp_dim,
        f"{text}.num_heads": arch.text.num_heads,
        f"{text}.vocab_size": arch.vocab_size,
        f"{text}.context_length": arch.context_length,
        f"{text}.causal": True,
        f"{text}.pool": "eot",
        f"{term}.bias_init": arch.logit_bias,
        f"data.modalities.{IMAGE}.size": arch.image_size,
    }
    if arch.logit_bias is not None:
        fields[f"{term}.loss"] = "sigmoid"
    if arch.vocab_size == CLIP_VOCAB_SIZE:
        if "clip_bpe" in TOKENIZERS:
            fields[f"data.modalities.{TEXT}.tokenizer"] = "clip_bpe"
        else:
            logging.warning("No clip_bpe tokenizer in mmjax.data: text ids will not match.")
    return fields


def open_clip_term(config: ml_collections.ConfigDict) -> str:
    """The name of the objective term whose t and b are open_clip's logit scale and bias."""
    _check_mmjax_shape(config)
    return next(iter(config.objectives))


def _check_mmjax_shape(config: ml_collections.ConfigDict) -> None:
    """Fails unless the model is open_clip's shape: towers image (vit) and text (text),
    and one objective term between them."""
    problems = []
    towers = config.model.towers
    if sorted(towers) != sorted(TOWER_TYPES):
        problems.append(
            f"model.towers={sorted(towers)} (open_clip's CLIP has two towers: an image ViT"
            f" named {IMAGE!r} and a text Transformer named {TEXT!r})"
        )
    for name, kind in TOWER_TYPES.items():
        if name in towers and towers[name].type != kind:
            problems.append(f"model.towers.{name}.type={towers[name].type!r} ({kind!r} only)")
        if name in towers and towers[name].share:
            problems.append(f"model.towers.{name}.share={towers[name].share!r} (no sharing)")
    terms = {name: tuple(t.modalities) for name, t in config.objectives.items()}
    if len(terms) != 1 or sorted(next(iter(terms.values()))) != sorted(TOWER_TYPES):
        problems.append(
            f"objectives={terms} (open_clip's CLIP has one logit scale and bias: exactly one"
            f" term, between {IMAGE!r} and {TEXT!r})"
        )
    if IMAGE not in config.data.modalities:
        problems.append(f"data.modalities has no {IMAGE!r} (the image size comes from it)")
    if problems:
        raise ValueError("mmjax models open_clip cannot express: " + "; ".join(problems))


def arch_from_mmjax(config: ml_collections.ConfigDict) -> Arch:
    """The open_clip-expressible architecture of an mmjax config (its towers, its one
    term, and data.modalities.image.size)."""
    term = config.objectives[open_clip_term(config)]
    m = config.model
    image, text = m.towers[IMAGE], m.towers[TEXT]
    problems = []
    if m.act not in ("gelu", "quick_gelu"):
        problems.append(f"model.act={m.act!r} (gelu or quick_gelu)")
    if image.pool != "cls":
        problems.append(
            f"model.towers.{IMAGE}.pool={image.pool!r} (open_clip pools the class token)"
        )
    if not text.causal or text.pool != "eot":
        problems.append(
            f"model.towers.{TEXT}.causal={text.causal}, pool={text.pool!r} (causal with eot)"
        )
    if problems:
        raise ValueError("mmjax options open_clip cannot reproduce: " + "; ".join(problems))
    tokenizer = config.data.modalities[TEXT].tokenizer if TEXT in config.data.modalities else ""
    if tokenizer != "clip_bpe":
        logging.warning(
            "This model reads data.modalities.%s.tokenizer=%r ids, but open_clip (and"
            " CLIP_benchmark) will feed it CLIP BPE ids: its text embeddings there will not"
            " mean much.",
            TEXT,
            tokenizer,
        )
    size, patch = decode_variant(image.variant)
    return Arch(
        embed_dim=m.embed_dim,
        quick_gelu=m.act == "quick_gelu",
        image=Tower(
            image.width or size.width,
            image.depth or size.depth,
            image.num_heads or size.num_heads,
            image.mlp_dim or size.mlp_dim,
        ),
        patch_size=patch,
        image_size=config.data.modalities[IMAGE].size,
        pre_norm=image.pre_norm,
        text=Tower(text.width, text.depth, text.num_heads, text.mlp_dim),
        context_length=text.context_length,
        vocab_size=text.vocab_size,
        text_proj_bias=m.proj_bias,
        logit_bias=term.bias_init,
        mean=tuple(image.mean),
        std=tuple(image.std),
    )
