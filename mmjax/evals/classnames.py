"""Curated class-name lists shipped with mmjax, by name (`class_names` in an entry).

Dataset label names are often identifiers (ImageNet's "n01440764") that make poor
prompts. "imagenet" is the CLIP paper's curated list of ImageNet-1k names in label order,
from openai/CLIP notebooks/Prompt_Engineering_for_ImageNet.ipynb (MIT licence), kept
verbatim: it names two pairs of classes alike ("missile" 657/744, "sunglasses"
836/837), as in the paper's evaluations.
"""

import functools
import importlib.resources
import json


@functools.cache
def _imagenet() -> tuple[str, ...]:
    text = importlib.resources.files("mmjax.evals").joinpath("imagenet_classes.json").read_text()
    return tuple(json.loads(text))


CLASS_LISTS = {"imagenet": _imagenet}


def class_list(name: str) -> tuple[str, ...]:
    """The shipped list `name`; unknown names fail with the known ones."""
    if name not in CLASS_LISTS:
        raise ValueError(f"Unknown class-name list {name!r}; known: {', '.join(CLASS_LISTS)}.")
    return CLASS_LISTS[name]()
