"""Parameters and configs written by mmjax before multi-tower models (the two-tower core).

The two-tower model kept its projections and logit parameters at the top of the tree:

  {"image": {patch_embed, cls?, pos_embed, ln_pre?, map?, encoder, ln_post},
   "text": {token_embed, pos_embed, encoder, ln_final},
   "image_proj", "text_proj", "t", "b"?}

The multi-tower model gives each tower a stem, the shared encoder, a final "norm" and
its own "proj", and each objective term its own logit parameters:

  {"image": {"stem": {patch_embed, cls?, pos_embed, ln_pre?}, map?, encoder, norm, proj},
   "text": {"stem": {token_embed, pos_embed}, encoder, norm, proj},
   "objectives": {"image_text": {"t", "b"?}}}

Every array moves, none changes; the optimizer's moments mirror the parameters and move
the same way (`upgrade_tree`). The old forward pass capped the scale at max_scale
(min(exp(t), max_scale)) and let t itself drift above log(max_scale); the new one clamps
t after each update instead, so an old t above the cap is lowered to it, which leaves
the scale the model computes unchanged (`clamp_scale`).

Config fields move likewise (`upgrade_config`): `model.image.*` and `model.text.*` to
`model.towers.{image,text}.*`, the loss and the logit fields to `objectives.image_text`,
the image and text data fields to `data.modalities.{image,text}`.
"""

import logging
import math
from collections.abc import Mapping
from typing import Any

import ml_collections
import numpy as np

from mmjax import config as config_lib
from mmjax.interop import config_json

TERM = "image_text"  # the name base() gives the image-text term
# Entries of each old tower that the new one keeps in its stem, and its final LayerNorm.
STEM = {
    "image": ("patch_embed", "cls", "pos_embed", "ln_pre"),
    "text": ("token_embed", "pos_embed"),
}
NORM = {"image": "ln_post", "text": "ln_final"}
KEPT = ("encoder", "map")  # at the same place in the tower
LOGITS = ("t", "b")
TOP = ("image", "text", "image_proj", "text_proj", *LOGITS)


def is_two_tower_params(tree: Any) -> bool:
    """Whether `tree` is a parameter tree (or a mirror of one) in the two-tower layout."""
    return isinstance(tree, Mapping) and "image_proj" in tree and "text_proj" in tree


def is_two_tower_config(saved: Mapping[str, Any]) -> bool:
    """Whether a saved `config.json` (as a dict) has the two-tower fields."""
    model = saved.get("model", {})
    return "towers" not in model and ("image" in model or "loss" in saved)


def _unknown(tree: Mapping[str, Any], known: tuple[str, ...], where: str) -> None:
    extra = sorted(set(tree) - set(known))
    if extra:
        raise ValueError(f"Unexpected entries {extra} in the two-tower {where}; known: {known}.")


def _tower(old: Mapping[str, Any], modality: str, proj: Any) -> dict[str, Any]:
    _unknown(old, (*STEM[modality], *KEPT, NORM[modality]), f"{modality} tower")
    tower: dict[str, Any] = {"stem": {k: old[k] for k in STEM[modality] if k in old}}
    tower |= {k: old[k] for k in KEPT if k in old}
    tower["norm"] = old[NORM[modality]]
    tower["proj"] = proj
    return tower


def upgrade_params(old: Mapping[str, Any], term: str = TERM) -> dict[str, Any]:
    """A two-tower parameter tree (or any tree that mirrors one) in the multi-tower layout."""
    _unknown(old, TOP, "parameters")
    return {
        "image": _tower(old["image"], "image", old["image_proj"]),
        "text": _tower(old["text"], "text", old["text_proj"]),
        "objectives": {term: {k: old[k] for k in LOGITS if k in old}},
    }


def upgrade_tree(tree: Any, term: str = TERM) -> Any:
    """`tree` (a saved train state: nested dicts and lists) with every two-tower parameter
    tree in it (the parameters, the optimizer's moments) upgraded."""
    if is_two_tower_params(tree):
        return upgrade_params(tree, term)
    if isinstance(tree, Mapping):
        return {k: upgrade_tree(v, term) for k, v in tree.items()}
    if isinstance(tree, list | tuple):
        return type(tree)(upgrade_tree(v, term) for v in tree)
    return tree


def clamp_scale(params: dict[str, Any], term: str, max_scale: float) -> bool:
    """Lowers the term's t to log(max_scale) if above (in place); True if it changed.

    exp(min(t, log cap)) = min(exp(t), cap): the old forward pass's scale, now held in t.
    """
    logits = params["objectives"][term]
    t = np.asarray(logits["t"])
    cap = np.asarray(math.log(max_scale), t.dtype)
    if t <= cap:
        return False
    logging.warning("t=%.6f is above log(max_scale)=%.6f: lowered to it.", float(t), float(cap))
    logits["t"] = np.minimum(t, cap)
    return True


# ---------------------------------------------------------------------------- configs

# Old dotted field -> new dotted field. Fields not listed keep their place.
MOVED = {
    "model.temperature_init": f"objectives.{TERM}.temperature_init",
    "model.max_scale": f"objectives.{TERM}.max_scale",
    "model.bias_init": f"objectives.{TERM}.bias_init",
    "loss.name": f"objectives.{TERM}.loss",
    "loss.tile_size": f"objectives.{TERM}.tile_size",
    "loss.chunk_size": f"objectives.{TERM}.chunk_size",
    "data.image_size": "data.modalities.image.size",
    "data.image_key": "data.modalities.image.key",
    "data.crop_scale": "data.modalities.image.crop_scale",
    "data.crop_ratio": "data.modalities.image.crop_ratio",
    "data.decoder": "data.modalities.image.decoder",
    "data.resizer": "data.modalities.image.resizer",
    "data.text_key": "data.modalities.text.key",
    "data.tokenizer": "data.modalities.text.tokenizer",
    "data.tokenizer_model": "data.modalities.text.tokenizer_model",
}
PREFIXES = {"model.image.": "model.towers.image.", "model.text.": "model.towers.text."}
# Gone without a successor: the two-tower model was the only model.
DROPPED = ("model.name",)
# Options of the ring losses, which the terms of other losses do not have: dropped quietly.
OPTIONAL = ("loss.tile_size", "loss.chunk_size")
# Old values that the new field spells differently.
CONVERT = {"model.remat": lambda v: ("full" if v else "none") if isinstance(v, bool) else v}
# Old defaults whose new defaults read the same fields and more (a fallback key added): a
# run that kept the old default keeps the new one, so that resuming it with the recipes
# of today is not refused as a different run.
OLD_DEFAULTS = {"data.image_key": "jpg;jpeg;png;webp", "data.text_key": "txt"}


def _flatten(tree: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    out = {}
    for k, v in tree.items():
        if isinstance(v, Mapping):
            out |= _flatten(v, f"{prefix}{k}.")
        else:
            out[f"{prefix}{k}"] = v
    return out


def _set(tree: dict[str, Any], dotted: str, value: Any) -> None:
    *parents, leaf = dotted.split(".")
    for p in parents:
        tree = tree.setdefault(p, {})
    tree[leaf] = value


def new_field(old: str) -> str | None:
    """Where an old dotted field lives now (None: dropped)."""
    if old in DROPPED:
        return None
    if old in MOVED:
        return MOVED[old]
    for a, b in PREFIXES.items():
        if old.startswith(a):
            return b + old[len(a) :]
    return old


# The entries the two-tower model implied: its towers, data modalities and one term.
TYPES = {
    "model.towers.image.type": "vit",
    "model.towers.text.type": "text",
    "data.modalities.image.type": "image",
    "data.modalities.text.type": "text",
    f"objectives.{TERM}.modalities": ("image", "text"),
    f"objectives.{TERM}.loss": "softmax",  # the default of the two-tower config too
}


def _upgrade_evals(saved: Mapping[str, Any]) -> dict[str, Any]:
    """Evaluator entries as saved, with the fields today's base config adds to an entry
    of the same name (e.g. zeroshot's `weights`) at their defaults."""
    base = config_lib.base().evals
    return {
        name: {**base[name].to_dict(), **entry} if name in base else dict(entry)
        for name, entry in saved.items()
    }


def upgrade_config(saved: Mapping[str, Any]) -> tuple[ml_collections.ConfigDict, list[str]]:
    """A two-tower run's `config.json` (as a dict) as a multi-tower config, and the saved
    fields it has no place for (dropped).

    `config.base()` (an image ViT, a text tower, one image-text term with the saved
    loss) with every saved field set at its new place. Evaluator entries are kept as
    saved.
    """
    saved = dict(saved)
    new: dict[str, Any] = {"evals": _upgrade_evals(saved.pop("evals"))} if "evals" in saved else {}
    for field, value in TYPES.items():
        _set(new, field, value)
    origin = {}  # new field -> the old one it came from
    for old, value in _flatten(saved).items():
        field = new_field(old)
        if field is None or (old in OLD_DEFAULTS and value == OLD_DEFAULTS[old]):
            continue
        _set(new, field, CONVERT.get(old, lambda v: v)(value))
        origin[field] = old
    config, ignored = config_json.config_from_dict(new)
    dropped = [origin.get(f, f) for f in ignored]
    return config, [f for f in dropped if f not in OPTIONAL]
