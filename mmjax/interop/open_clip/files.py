"""Reading and writing open_clip state dicts: .pt / .bin (torch) and .safetensors."""

import io
from collections.abc import Mapping
from typing import Any

import numpy as np

from mmjax import storage
from mmjax.interop.open_clip.arch import StateDict

# Entries of OpenAI's original checkpoints that are not parameters.
_NOT_PARAMS = ("input_resolution", "context_length", "vocab_size", "attn_mask")


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
    """Writes `.safetensors` (needs only `safetensors`) or a torch file (`.bin`, `.pt`),
    to a local path or a URL (gs://...)."""
    arrays = {k: np.array(v, order="C") for k, v in state_dict.items()}  # keeps 0-d arrays 0-d
    if path.endswith(".safetensors"):
        from safetensors.numpy import save

        storage.write_bytes(path, save(arrays))
        return
    import torch

    buffer = io.BytesIO()
    torch.save({k: torch.from_numpy(v) for k, v in arrays.items()}, buffer)
    storage.write_bytes(path, buffer.getvalue())
