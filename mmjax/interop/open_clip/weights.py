"""open_clip state dicts <-> mmjax parameters: transposes and reshapes only (bitwise).

The mmjax side is the multi-tower tree of open_clip's shape (`arch.py`):

  {"image": {"stem": {patch_embed, cls, pos_embed, ln_pre?}, encoder, norm, proj},
   "text": {"stem": {token_embed, pos_embed}, encoder, norm, proj},
   "objectives": {<term>: {"t": logit_scale, "b": logit_bias?}}}
"""

import logging
from collections.abc import Mapping

import numpy as np

from mmjax.interop.open_clip.arch import IMAGE, TERM, TEXT, Arch, Params, StateDict, Tower


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


def params_from_state_dict(
    state_dict: Mapping[str, np.ndarray], arch: Arch, term: str = TERM
) -> Params:
    """open_clip state dict -> mmjax `params` (numpy, float32) of the model `arch` builds;
    logit_scale (and logit_bias) become objective term `term`'s t (and b)."""
    check_state_dict(state_dict, arch)
    sd = {k: np.asarray(v, np.float32) for k, v in state_dict.items()}
    width = arch.image.width
    image_stem: Params = {
        # [out, in, h, w] -> [h, w, in, out]; no bias (model.towers.image.patch_bias=False).
        "patch_embed": {"kernel": sd["visual.conv1.weight"].transpose(2, 3, 1, 0)},
        "cls": sd["visual.class_embedding"].reshape(1, 1, width),
        "pos_embed": sd["visual.positional_embedding"][None],
    }
    if arch.pre_norm:
        image_stem["ln_pre"] = _ln(sd, "visual.ln_pre")
    image: Params = {
        "stem": image_stem,
        "encoder": _encoder_to_flax(sd, "visual.transformer", arch.image),
        "norm": _ln(sd, "visual.ln_post"),
        "proj": {"kernel": sd["visual.proj"]},
    }
    text: Params = {
        "stem": {
            "token_embed": {"embedding": sd["token_embedding.weight"]},
            "pos_embed": sd["positional_embedding"],
        },
        "encoder": _encoder_to_flax(sd, "transformer", arch.text),
        "norm": _ln(sd, "ln_final"),
    }
    if arch.text_proj_bias:
        text["proj"] = {
            "kernel": sd["text_projection.weight"].T,
            "bias": sd["text_projection.bias"],
        }
        # mmjax's proj_bias covers both towers; open_clip's image projection has none.
        image["proj"]["bias"] = np.zeros(arch.embed_dim, np.float32)
    else:
        text["proj"] = {"kernel": sd["text_projection"]}
    logits = {"t": sd["logit_scale"].reshape(())}
    if arch.logit_bias is not None:
        logits["b"] = sd["logit_bias"].reshape(())
    return {IMAGE: image, TEXT: text, "objectives": {term: logits}}


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


def _logits(params: Params, term: str | None) -> Params:
    terms = params.get("objectives", {})
    if term is None:
        if len(terms) != 1:
            raise ValueError(
                f"open_clip has one logit scale; these parameters have terms {sorted(terms)}:"
                " name the one to export."
            )
        term = next(iter(terms))
    return terms[term]


def state_dict_from_params(params: Params, term: str | None = None) -> StateDict:
    """mmjax `params` of an open_clip-expressible model -> open_clip state dict (numpy).

    `term`: the objective term whose t and b become logit_scale and logit_bias (default:
    the only one). A patch-embedding bias is folded into the patch tokens' position
    embeddings (exact up to rounding); an image-projection bias, which open_clip lacks,
    must be zero.
    """
    image, text, logits = params[IMAGE], params[TEXT], _logits(params, term)
    stem = image["stem"]
    if "cls" not in stem or "map" in image:
        raise ValueError(
            "open_clip pools the class token: export needs model.towers.image.pool='cls'."
        )
    pos = np.array(stem["pos_embed"][0], np.float32)
    bias = stem["patch_embed"].get("bias")
    if bias is not None:
        logging.warning(
            "Folding the patch-embedding bias into the position embeddings (open_clip has"
            " no patch bias): exact up to float rounding."
        )
        pos[1:] += np.asarray(bias, np.float32)
    width = pos.shape[-1]
    sd: StateDict = {
        "visual.conv1.weight": np.asarray(stem["patch_embed"]["kernel"]).transpose(3, 2, 0, 1),
        "visual.class_embedding": np.asarray(stem["cls"]).reshape(width),
        "visual.positional_embedding": pos,
        "visual.ln_post.weight": np.asarray(image["norm"]["scale"]),
        "visual.ln_post.bias": np.asarray(image["norm"]["bias"]),
        "visual.proj": np.asarray(image["proj"]["kernel"]),
        "token_embedding.weight": np.asarray(text["stem"]["token_embed"]["embedding"]),
        "positional_embedding": np.asarray(text["stem"]["pos_embed"]),
        "ln_final.weight": np.asarray(text["norm"]["scale"]),
        "ln_final.bias": np.asarray(text["norm"]["bias"]),
        "logit_scale": np.asarray(logits["t"], np.float32).reshape(()),
    }
    if "ln_pre" in stem:
        sd["visual.ln_pre.weight"] = np.asarray(stem["ln_pre"]["scale"])
        sd["visual.ln_pre.bias"] = np.asarray(stem["ln_pre"]["bias"])
    image_bias = image["proj"].get("bias")
    if image_bias is not None and np.any(np.asarray(image_bias) != 0):
        raise ValueError("open_clip's image projection has no bias; this model's is not zero.")
    if "bias" in text["proj"]:
        sd["text_projection.weight"] = np.asarray(text["proj"]["kernel"]).T
        sd["text_projection.bias"] = np.asarray(text["proj"]["bias"])
    else:
        sd["text_projection"] = np.asarray(text["proj"]["kernel"])
    if "b" in logits:
        sd["logit_bias"] = np.asarray(logits["b"], np.float32).reshape(())
    sd |= _encoder_to_torch(image["encoder"], "visual.transformer")
    sd |= _encoder_to_torch(text["encoder"], "transformer")
    return {k: np.array(v, np.float32, order="C") for k, v in sd.items()}
