"""open_clip <-> mmjax, in numpy: architectures (`arch`), parameters (`weights`), files.

open_clip (which keeps OpenAI CLIP's names) stores a ViT CLIP as a flat state dict of
torch-layout arrays; mmjax holds the same numbers in Flax layout, layers stacked for
`nn.scan`. Every conversion is a transpose or a reshape, so a round trip is bitwise.
"""

from mmjax.interop.open_clip.arch import (
    CLIP_VOCAB_SIZE,
    TERM,
    Arch,
    Params,
    StateDict,
    Tower,
    arch_from_mmjax,
    arch_from_open_clip,
    mmjax_fields,
    model_cfg_from_name_or_file,
    open_clip_config_json,
    open_clip_model_cfg,
    open_clip_term,
    preprocess_cfg_from_name_or_file,
)
from mmjax.interop.open_clip.files import load_state_dict, save_state_dict
from mmjax.interop.open_clip.weights import (
    check_state_dict,
    params_from_state_dict,
    state_dict_from_params,
    state_dict_shapes,
)

__all__ = [
    "CLIP_VOCAB_SIZE",
    "TERM",
    "Arch",
    "Params",
    "StateDict",
    "Tower",
    "arch_from_mmjax",
    "arch_from_open_clip",
    "check_state_dict",
    "load_state_dict",
    "mmjax_fields",
    "model_cfg_from_name_or_file",
    "open_clip_config_json",
    "open_clip_model_cfg",
    "open_clip_term",
    "params_from_state_dict",
    "preprocess_cfg_from_name_or_file",
    "save_state_dict",
    "state_dict_from_params",
    "state_dict_shapes",
]
