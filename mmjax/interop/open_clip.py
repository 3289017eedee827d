"""open_clip <-> mmjax: parameters and model configs, in numpy.

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

# Entries of OpenAI's original checkpoints that are not parameters.
_NOT_PARAMS = ("input_resolution", "context_length", "vocab_size", "attn_mask")

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


# ----------------------------------------------------------------------------- weights


def _block_shapes(prefix: str, t: Tower) -> dict[str, tuple[int, ...]]:
    w = t.width
    shapes = {
        "attn.in_proj_weight": (3 * w, w),
        "attn.in_proj_bias": (3 * w,),
        "attn.out_proj.weight": (w, w),
        "attn.out_proj.bias": (w,),
        "mlp.c_fc.weight": (t.mlp_dim, w),
        "mlp.c_fc.bias": (t.mlp_dim,),
        "mlp.c_proj.weight": (w, t.mlp_dim),
        "mlp.c_proj.bias": (w,),
    }
    for ln in ("ln_1", "ln_2"):
        shapes |= {f"{ln}.weight": (w,), f"{ln}.bias": (w,)}
    return {f"{prefix}.resblocks.{i}.{k}": s for i in range(t.depth) for k, s in shapes.items()}


def state_dict_shapes(arch: Arch) -> dict[str, tuple[int, ...]]:
    """Every key of open_clip's state dict for `arch`, with its shape."""
    w, tw, e = arch.image.width, arch.text.width, arch.embed_dim
    shapes: dict[str, tuple[int, ...]] = {
        "visual.conv1.weight": (w, 3, arch.patch_size, arch.patch_size),
        "visual.class_embedding": (w,),
        "visual.positional_embedding": (arch.grid**2 + 1, w),
        "visual.ln_post.weight": (w,),
        "visual.ln_post.bias": (w,),
        "visual.proj": (w, e),
        "token_embedding.weight": (arch.vocab_size, tw),
        "positional_embedding": (arch.context_length, tw),
        "ln_final.weight": (tw,),
        "ln_final.bias": (tw,),
        "logit_scale": (),
    }
    if arch.pre_norm:
        shapes |= {"visual.ln_pre.weight": (w,), "visual.ln_pre.bias": (w,)}
    if arch.text_proj_bias:
        shapes |= {"text_projection.weight": (e, tw), "text_projection.bias": (e,)}
    else:
        shapes["text_projection"] = (tw, e)
    if arch.logit_bias is not None:
        shapes["logit_bias"] = ()
    shapes |= _block_shapes("visual.transformer", arch.image)
    shapes |= _block_shapes("transformer", arch.text)
    return shapes


def check_state_dict(state_dict: Mapping[str, np.ndarray], arch: Arch) -> None:
    """Fails, naming keys, unless `state_dict` holds exactly the parameters of `arch`."""
    expected = state_dict_shapes(arch)
    missing = sorted(set(expected) - set(state_dict))
    unexpected = sorted(set(state_dict) - set(expected))
    # open_clip's nonscalar_logit_scale stores the scale (and bias) with shape (1,).
    fits = lambda shape, want: shape == want or (want == () and shape == (1,))
    wrong = [
        f"{k} {tuple(state_dict[k].shape)} (expected {expected[k]})"
        for k in expected
        if k in state_dict and not fits(tuple(state_dict[k].shape), expected[k])
    ]
    if missing or unexpected or wrong:
        show = lambda keys: ", ".join(keys[:6]) + (" ..." if len(keys) > 6 else "")
        raise ValueError(
            "The state dict does not match the model config:"
            + (f" missing {show(missing)};" if missing else "")
            + (f" unexpected {show(unexpected)};" if unexpected else "")
            + (f" wrong shape {show(wrong)}" if wrong else "")
        )


def _ln(sd: Mapping[str, np.ndarray], prefix: str) -> dict[str, np.ndarray]:
    return {"scale": sd[f"{prefix}.weight"], "bias": sd[f"{prefix}.bias"]}


def _block_to_flax(sd: Mapping[str, np.ndarray], prefix: str, heads: int) -> Params:
    in_w = sd[f"{prefix}.attn.in_proj_weight"]  # rows: q, k, v; within each, head-major
    width = in_w.shape[1]
    head_dim = width // heads
    return {
        "ln1": _ln(sd, f"{prefix}.ln_1"),
        "ln2": _ln(sd, f"{prefix}.ln_2"),
        "attn": {
            "qkv": {
                "kernel": in_w.reshape(3, heads, head_dim, width).transpose(3, 0, 1, 2),
                "bias": sd[f"{prefix}.attn.in_proj_bias"].reshape(3, heads, head_dim),
            },
            "out": {
                "kernel": sd[f"{prefix}.attn.out_proj.weight"].T.reshape(heads, head_dim, width),
                "bias": sd[f"{prefix}.attn.out_proj.bias"],
            },
        },
        "mlp": {
            "fc1": {
                "kernel": sd[f"{prefix}.mlp.c_fc.weight"].T,
                "bias": sd[f"{prefix}.mlp.c_fc.bias"],
            },
            "fc2": {
                "kernel": sd[f"{prefix}.mlp.c_proj.weight"].T,
                "bias": sd[f"{prefix}.mlp.c_proj.bias"],
            },
        },
    }


def _stack(trees: list[Params]) -> Params:
    """Per-layer trees -> one tree with a leading layers axis (the layout of `nn.scan`)."""
    if isinstance(trees[0], dict):
        return {k: _stack([t[k] for t in trees]) for k in trees[0]}
    return np.stack(trees)


def _encoder_to_flax(sd: Mapping[str, np.ndarray], prefix: str, tower: Tower) -> Params:
    blocks = [
        _block_to_flax(sd, f"{prefix}.resblocks.{i}", tower.num_heads) for i in range(tower.depth)
    ]
    return {"blocks": _stack(blocks)}


def params_from_state_dict(state_dict: Mapping[str, np.ndarray], arch: Arch) -> Params:
    """open_clip state dict -> mmjax `params` (numpy, float32) of the model `arch` builds."""
    check_state_dict(state_dict, arch)
    sd = {k: np.asarray(v, np.float32) for k, v in state_dict.items()}
    width = arch.image.width
    image: Params = {
        # [out, in, h, w] -> [h, w, in, out]; no bias (mmjax: model.image.patch_bias=False).
        "patch_embed": {"kernel": sd["visual.conv1.weight"].transpose(2, 3, 1, 0)},
        "cls": sd["visual.class_embedding"].reshape(1, 1, width),
        "pos_embed": sd["visual.positional_embedding"][None],
        "encoder": _encoder_to_flax(sd, "visual.transformer", arch.image),
        "ln_post": _ln(sd, "visual.ln_post"),
    }
    if arch.pre_norm:
        image["ln_pre"] = _ln(sd, "visual.ln_pre")
    text = {
        "token_embed": {"embedding": sd["token_embedding.weight"]},
        "pos_embed": sd["positional_embedding"],
        "encoder": _encoder_to_flax(sd, "transformer", arch.text),
        "ln_final": _ln(sd, "ln_final"),
    }
    params: Params = {
        "image": image,
        "text": text,
        "image_proj": {"kernel": sd["visual.proj"]},
        "t": sd["logit_scale"].reshape(()),
    }
    if arch.text_proj_bias:
        params["text_proj"] = {
            "kernel": sd["text_projection.weight"].T,
            "bias": sd["text_projection.bias"],
        }
        # mmjax's proj_bias covers both towers; open_clip's image projection has none.
        params["image_proj"]["bias"] = np.zeros(arch.embed_dim, np.float32)
    else:
        params["text_proj"] = {"kernel": sd["text_projection"]}
    if arch.logit_bias is not None:
        params["b"] = sd["logit_bias"].reshape(())
    return params


def _block_to_torch(blocks: dict[str, np.ndarray], i: int, prefix: str) -> StateDict:
    layer = {k: v[i] for k, v in blocks.items()}
    qkv = layer["attn.qkv.kernel"]  # [width, 3, heads, head_dim]
    width = qkv.shape[0]
    return {
        f"{prefix}.ln_1.weight": layer["ln1.scale"],
        f"{prefix}.ln_1.bias": layer["ln1.bias"],
        f"{prefix}.attn.in_proj_weight": qkv.transpose(1, 2, 3, 0).reshape(3 * width, width),
        f"{prefix}.attn.in_proj_bias": layer["attn.qkv.bias"].reshape(3 * width),
        f"{prefix}.attn.out_proj.weight": layer["attn.out.kernel"].reshape(width, width).T,
        f"{prefix}.attn.out_proj.bias": layer["attn.out.bias"],
        f"{prefix}.ln_2.weight": layer["ln2.scale"],
        f"{prefix}.ln_2.bias": layer["ln2.bias"],
        f"{prefix}.mlp.c_fc.weight": layer["mlp.fc1.kernel"].T,
        f"{prefix}.mlp.c_fc.bias": layer["mlp.fc1.bias"],
        f"{prefix}.mlp.c_proj.weight": layer["mlp.fc2.kernel"].T,
        f"{prefix}.mlp.c_proj.bias": layer["mlp.fc2.bias"],
    }


def _flatten(tree: Params, prefix: str = "") -> dict[str, np.ndarray]:
    out = {}
    for k, v in tree.items():
        if isinstance(v, Mapping):
            out |= _flatten(v, f"{prefix}{k}.")
        else:
            out[f"{prefix}{k}"] = np.asarray(v)
    return out


def _encoder_to_torch(encoder: Params, prefix: str) -> StateDict:
    blocks = _flatten(encoder["blocks"])  # "attn.qkv.kernel" -> [layers, ...]
    depth = blocks["ln1.scale"].shape[0]
    out: StateDict = {}
    for i in range(depth):
        out |= _block_to_torch(blocks, i, f"{prefix}.resblocks.{i}")
    return out


def state_dict_from_params(params: Params) -> StateDict:
    """mmjax `params` of an open_clip-expressible model -> open_clip state dict (numpy).

    A patch-embedding bias is folded into the patch tokens' position embeddings (exact up
    to rounding); an image-projection bias, which open_clip lacks, must be zero.
    """
    p = params
    image, text = p["image"], p["text"]
    if "cls" not in image or "map" in image:
        raise ValueError("open_clip pools the class token: export needs model.image.pool='cls'.")
    pos = np.array(image["pos_embed"][0], np.float32)
    bias = image["patch_embed"].get("bias")
    if bias is not None:
        logging.warning(
            "Folding the patch-embedding bias into the position embeddings (open_clip has"
            " no patch bias): exact up to float rounding."
        )
        pos[1:] += np.asarray(bias, np.float32)
    width = pos.shape[-1]
    sd: StateDict = {
        "visual.conv1.weight": np.asarray(image["patch_embed"]["kernel"]).transpose(3, 2, 0, 1),
        "visual.class_embedding": np.asarray(image["cls"]).reshape(width),
        "visual.positional_embedding": pos,
        "visual.ln_post.weight": np.asarray(image["ln_post"]["scale"]),
        "visual.ln_post.bias": np.asarray(image["ln_post"]["bias"]),
        "visual.proj": np.asarray(p["image_proj"]["kernel"]),
        "token_embedding.weight": np.asarray(text["token_embed"]["embedding"]),
        "positional_embedding": np.asarray(text["pos_embed"]),
        "ln_final.weight": np.asarray(text["ln_final"]["scale"]),
        "ln_final.bias": np.asarray(text["ln_final"]["bias"]),
        "logit_scale": np.asarray(p["t"], np.float32).reshape(()),
    }
    if "ln_pre" in image:
        sd["visual.ln_pre.weight"] = np.asarray(image["ln_pre"]["scale"])
        sd["visual.ln_pre.bias"] = np.asarray(image["ln_pre"]["bias"])
    image_bias = p["image_proj"].get("bias")
    if image_bias is not None and np.any(np.asarray(image_bias) != 0):
        raise ValueError("open_clip's image projection has no bias; this model's is not zero.")
    if "bias" in p["text_proj"]:
        sd["text_projection.weight"] = np.asarray(p["text_proj"]["kernel"]).T
        sd["text_projection.bias"] = np.asarray(p["text_proj"]["bias"])
    else:
        sd["text_projection"] = np.asarray(p["text_proj"]["kernel"])
    if "b" in p:
        sd["logit_bias"] = np.asarray(p["b"], np.float32).reshape(())
    sd |= _encoder_to_torch(image["encoder"], "visual.transformer")
    sd |= _encoder_to_torch(text["encoder"], "transformer")
    return {k: np.array(v, np.float32, order="C") for k, v in sd.items()}


# ----------------------------------------------------------------------------- files


def _to_numpy(value: Any) -> np.ndarray:
    """A torch tensor (any float dtype, bfloat16 included) -> float32 numpy."""
    if hasattr(value, "detach"):
        value = value.detach().cpu().float().numpy()
    return np.asarray(value, np.float32)


def load_state_dict(path: str) -> StateDict:
    """An open_clip or OpenAI checkpoint (.safetensors, .pt, .pth, .bin) as float32 numpy.

    Accepts a bare state dict, a training checkpoint {"state_dict": ...} with or without
    DistributedDataParallel's "module." prefix, and OpenAI's TorchScript archives; drops
    OpenAI's non-parameter entries. Half-precision weights (OpenAI ships float16) widen
    exactly to float32.
    """
    if path.endswith(".safetensors"):
        from safetensors.numpy import load_file

        raw: Mapping[str, Any] = load_file(path)
    else:
        import torch

        try:
            raw = torch.load(path, map_location="cpu", weights_only=True)
        except RuntimeError as error:
            if "TorchScript" not in str(error) and "jit" not in str(error).lower():
                raise
            raw = torch.jit.load(path, map_location="cpu").state_dict()
        if isinstance(raw, Mapping) and "state_dict" in raw:
            raw = raw["state_dict"]
    sd = {}
    for key, value in raw.items():
        key = key.removeprefix("module.")
        if key not in _NOT_PARAMS:
            sd[key] = _to_numpy(value)
    return sd


def save_state_dict(state_dict: Mapping[str, np.ndarray], path: str) -> None:
    """Writes `.safetensors` (needs only `safetensors`) or a torch file (`.bin`, `.pt`)."""
    arrays = {k: np.array(v, order="C") for k, v in state_dict.items()}  # keeps 0-d arrays 0-d
    if path.endswith(".safetensors"):
        from safetensors.numpy import save_file

        save_file(arrays, path)
        return
    import torch

    torch.save({k: torch.from_numpy(v) for k, v in arrays.items()}, path)
