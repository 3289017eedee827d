"""Prompt templates for zero-shot classification, by name (`templates` in an entry).

The ImageNet, CIFAR-10 and CIFAR-100 lists are those of the CLIP paper (Radford et al.
2021): the 80 ImageNet templates and the 7-template subset found by sequential forward
selection (openai/CLIP notebooks/Prompt_Engineering_for_ImageNet.ipynb), and the 18
CIFAR templates (openai/CLIP data/prompts.md), in their original order.
"""

# For the synthetic source. None of these is a training caption template
# (data/synthetic.py TRAIN_TEMPLATES), so zero-shot accuracy measures transfer.
SYNTHETIC = (
    "a photo of a {}.",
    "a drawing of a {}.",
    "an image showing a {}.",
)

IMAGENET = (
    "a bad photo of a {}.",
    "a photo of many {}.",
    "a sculpture of a {}.",
    "a photo of the hard to see {}.",
    "a low resolution photo of the {}.",
    "a rendering of a {}.",
    "graffiti of a {}.",
    "a bad photo of the {}.",
    "a cropped photo of the {}.",
    "a tattoo of a {}.",
    "the embroidered {}.",
    "a photo of a hard to see {}.",
    "a bright photo of a {}.",
    "a photo of a clean {}.",
    "a photo of a dirty {}.",
    "a dark photo of the {}.",
    "a drawing of a {}.",
    "a photo of my {}.",
    "the plastic {}.",
    "a photo of the cool {}.",
    "a close-up photo of a {}.",
    "a black and white photo of the {}.",
    "a painting of the {}.",
    "a painting of a {}.",
    "a pixelated photo of the {}.",
    "a sculpture of the {}.",
    "a bright photo of the {}.",
    "a cropped photo of a {}.",
    "a plastic {}.",
    "a photo of the dirty {}.",
    "a jpeg corrupted photo of a {}.",
    "a blurry photo of the {}.",
    "a photo of the {}.",
    "a good photo of the {}.",
    "a rendering of the {}.",
    "a {} in a video game.",
    "a photo of one {}.",
    "a doodle of a {}.",
    "a close-up photo of the {}.",
    "a photo of a {}.",
    "the origami {}.",
    "the {} in a video game.",
    "a sketch of a {}.",
    "a doodle of the {}.",
    "a origami {}.",
    "a low resolution photo of a {}.",
    "the toy {}.",
    "a rendition of the {}.",
    "a photo of the clean {}.",
    "a photo of a large {}.",
    "a rendition of a {}.",
    "a photo of a nice {}.",
    "a photo of a weird {}.",
    "a blurry photo of a {}.",
    "a cartoon {}.",
    "art of a {}.",
    "a sketch of the {}.",
    "a embroidered {}.",
    "a pixelated photo of a {}.",
    "itap of the {}.",
    "a jpeg corrupted photo of the {}.",
    "a good photo of a {}.",
    "a plushie {}.",
    "a photo of the nice {}.",
    "a photo of the small {}.",
    "a photo of the weird {}.",
    "the cartoon {}.",
    "art of the {}.",
    "a drawing of the {}.",
    "a photo of the large {}.",
    "a black and white photo of a {}.",
    "the plushie {}.",
    "a dark photo of a {}.",
    "itap of a {}.",
    "graffiti of the {}.",
    "a toy {}.",
    "itap of my {}.",
    "a photo of a cool {}.",
    "a photo of a small {}.",
    "a tattoo of the {}.",
)

# "This subset performs a bit better than the full 80 ensemble" (the CLIP notebook).
IMAGENET_7 = (
    "itap of a {}.",
    "a bad photo of the {}.",
    "a origami {}.",
    "a photo of the large {}.",
    "a {} in a video game.",
    "art of the {}.",
    "a photo of the small {}.",
)

# CLIP uses the same 18 templates for CIFAR-10 and CIFAR-100.
CIFAR = (
    "a photo of a {}.",
    "a blurry photo of a {}.",
    "a black and white photo of a {}.",
    "a low contrast photo of a {}.",
    "a high contrast photo of a {}.",
    "a bad photo of a {}.",
    "a good photo of a {}.",
    "a photo of a small {}.",
    "a photo of a big {}.",
    "a photo of the {}.",
    "a blurry photo of the {}.",
    "a black and white photo of the {}.",
    "a low contrast photo of the {}.",
    "a high contrast photo of the {}.",
    "a bad photo of the {}.",
    "a good photo of the {}.",
    "a photo of the small {}.",
    "a photo of the big {}.",
)

# The single prompt of CLIP's baseline: for datasets with no curated list.
PHOTO = ("a photo of a {}.",)

TEMPLATES: dict[str, tuple[str, ...]] = {
    "synthetic": SYNTHETIC,
    "imagenet": IMAGENET,
    "imagenet7": IMAGENET_7,
    "cifar10": CIFAR,
    "cifar100": CIFAR,
    "photo": PHOTO,
}


def get_templates(name: str) -> tuple[str, ...]:
    """The template list `name`; unknown names fail with the known ones."""
    if name not in TEMPLATES:
        raise ValueError(f"Unknown templates {name!r}; known: {', '.join(TEMPLATES)}.")
    return TEMPLATES[name]
