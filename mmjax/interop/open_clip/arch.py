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
config. Whatever one side cannot express exactly fails with the option's name instead of
converting into a different model. The one approximation: a patch-embedding bias (mmjax
models trained with `model.image.patch_bias=True`; open_clip has none) is folded into the
position embeddings of the patch tokens on export, which is exact up to float rounding.

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
from mmjax.models.vit import VIT_SIZES, decode_variant
from mmjax.train.step import CLIP_MEAN, CLIP_STD

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
        # Another tokenizer than CLIP's BPE (mmjax's data.tokenizer="clip_bpe").
        hf_tokenizer_name=None,
        tokenizer_mode=None,
        tokenizer_kwargs=None,
    ),
}


def model_cfg_from_name_or_file(name_or_path: str) -> dict:
    """open_clip's model config for a built-in name (`ViT-B-32[-quickgelu]`) or a JSON file.

    The JSON may be a model config (`open_clip/model_configs/*.json`) or an
    `open_clip_config.json` holding one under "model_cfg".
    """
    if os.path.isfile(name_or_path):
        with open(name_or_path) as f:
            cfg = json.load(f)
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


def arch_from_open_clip(model_cfg: Mapping[str, Any]) -> Arch:
    """The architecture an open_clip model config describes; fails on what mmjax lacks."""
    _check_fields(model_cfg)
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

    The preprocessing is mmjax's: the image normalisation of `mmjax.train.step`.
    """
    return dict(
        model_cfg=open_clip_model_cfg(arch),
        preprocess_cfg=dict(mean=list(CLIP_MEAN), std=list(CLIP_STD)),
    )


def _vit_variant(image: Tower, patch: int) -> dict[str, Any]:
    """`model.image.*` fields: a named size when one matches, explicit sizes otherwise."""
    for name, size in VIT_SIZES.items():
        if (size.width, size.depth, size.mlp_dim, size.num_heads) == (
            image.width,
            image.depth,
            image.mlp_dim,
            image.num_heads,
        ):
            return {"model.image.variant": f"{name}/{patch}"}
    return {
        "model.image.variant": f"B/{patch}",
        "model.image.width": image.width,
        "model.image.depth": image.depth,
        "model.image.mlp_dim": image.mlp_dim,
        "model.image.num_heads": image.num_heads,
    }


def mmjax_fields(arch: Arch) -> dict[str, Any]:
    """Dotted mmjax config fields that build `arch` (for `--config.x=y` or a config file).

    With them goes CLIP's BPE tokenizer, the ids open_clip's weights were trained on
    (for its 49,408-token vocabulary; a toy vocabulary keeps mmjax's default tokenizer).
    """
    fields = {
        "model.name": "two_tower",
        "model.embed_dim": arch.embed_dim,
        "model.act": "quick_gelu" if arch.quick_gelu else "gelu",
        "model.proj_bias": arch.text_proj_bias,
        "model.bias_init": arch.logit_bias,
        **_vit_variant(arch.image, arch.patch_size),
        "model.image.pool": "cls",
        "model.image.pre_norm": arch.pre_norm,
        "model.image.patch_bias": False,
        "model.text.width": arch.text.width,
        "model.text.depth": arch.text.depth,
        "model.text.mlp_dim": arch.text.mlp_dim,
        "model.text.num_heads": arch.text.num_heads,
        "model.text.vocab_size": arch.vocab_size,
        "model.text.context_length": arch.context_length,
        "model.text.causal": True,
        "model.text.pool": "eot",
        "data.image_size": arch.image_size,
    }
    if arch.vocab_size == CLIP_VOCAB_SIZE:
        if "clip_bpe" in TOKENIZERS:
            fields["data.tokenizer"] = "clip_bpe"
        else:
            logging.warning("No clip_bpe tokenizer in mmjax.data: text ids will not match.")
    return fields


def arch_from_mmjax(config: ml_collections.ConfigDict) -> Arch:
    """The open_clip-expressible architecture of an mmjax config (model and data.image_size)."""
    m = config.model
    problems = []
    if m.name != "two_tower":
        problems.append(f"model.name={m.name!r} (only two_tower)")
    if m.act not in ("gelu", "quick_gelu"):
        problems.append(f"model.act={m.act!r} (gelu or quick_gelu)")
    if m.image.pool != "cls":
        problems.append(f"model.image.pool={m.image.pool!r} (open_clip pools the class token)")
    if not m.text.causal or m.text.pool != "eot":
        problems.append(
            f"model.text.causal={m.text.causal}, pool={m.text.pool!r} (causal with eot)"
        )
    if problems:
        raise ValueError("mmjax options open_clip cannot reproduce: " + "; ".join(problems))
    if config.data.tokenizer != "clip_bpe":
        logging.warning(
            "This model reads data.tokenizer=%r ids, but open_clip (and CLIP_benchmark)"
            " will feed it CLIP BPE ids: its text embeddings there will not mean much.",
            config.data.tokenizer,
        )
    size, patch = decode_variant(m.image.variant)
    image = Tower(
        m.image.width or size.width,
        m.image.depth or size.depth,
        m.image.num_heads or size.num_heads,
        m.image.mlp_dim or size.mlp_dim,
    )
    return Arch(
        embed_dim=m.embed_dim,
        quick_gelu=m.act == "quick_gelu",
        image=image,
        patch_size=patch,
        image_size=config.data.image_size,
        pre_norm=m.image.pre_norm,
        text=Tower(m.text.width, m.text.depth, m.text.num_heads, m.text.mlp_dim),
        context_length=m.text.context_length,
        vocab_size=m.text.vocab_size,
        text_proj_bias=m.proj_bias,
        logit_bias=m.bias_init,
    )
