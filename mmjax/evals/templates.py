"""Prompt templates for zero-shot classification, by dataset."""

# For the synthetic source. None of these is a training caption template
# (data/synthetic.py TRAIN_TEMPLATES), so zero-shot accuracy measures transfer.
SYNTHETIC = (
    "a photo of a {}.",
    "a drawing of a {}.",
    "an image showing a {}.",
)

TEMPLATES: dict[str, tuple[str, ...]] = {"synthetic": SYNTHETIC}
