"""A built-in captioned-image source made procedurally from each example's index.

Each image shows one shape (circle, square, triangle, cross, ring) in one colour, of one
of three sizes, at one of nine positions, on a noisy grey background. The caption
describes it with one of several training templates; the class is (colour, shape).
Everything is a pure function of (seed, split, index), so the demo trains and evaluates
with no download, identically on every machine and in every process.
"""

import dataclasses

import numpy as np

SHAPES = ("circle", "square", "triangle", "cross", "ring")
COLOURS = {
    "red": (220, 40, 40),
    "green": (40, 190, 60),
    "blue": (50, 80, 230),
    "yellow": (235, 220, 50),
    "purple": (150, 60, 200),
}
SIZES = {"small": 0.13, "medium": 0.19, "large": 0.26}
POSITIONS = {
    "top left": (0.28, 0.28),
    "top": (0.28, 0.5),
    "top right": (0.28, 0.72),
    "left": (0.5, 0.28),
    "centre": (0.5, 0.5),
    "right": (0.5, 0.72),
    "bottom left": (0.72, 0.28),
    "bottom": (0.72, 0.5),
    "bottom right": (0.72, 0.72),
}
# Captions used for training. Zero-shot prompts (evals/templates.py) are different.
TRAIN_TEMPLATES = (
    "a {size} {colour} {shape} in the {position}",
    "a {colour} {shape}",
    "{colour} {shape} on a grey background",
    "there is a {size} {shape} coloured {colour}",
    "the {shape} is {colour} and {size}",
    "a {shape} in the {position}, {colour}",
    "{size} {colour} {shape}",
    "one {colour} {shape} at the {position}",
)
CLASS_NAMES = tuple(f"{c} {s}" for s in SHAPES for c in COLOURS)
_SPLITS = {"train": 0, "eval": 1}


def _mask(shape: str, dy: np.ndarray, dx: np.ndarray, r: float) -> np.ndarray:
    """Boolean mask of a shape of radius r at offsets (dy, dx) from its centre."""
    d = np.sqrt(dy * dy + dx * dx)
    if shape == "circle":
        return d < r
    if shape == "square":
        return np.maximum(np.abs(dy), np.abs(dx)) < 0.85 * r
    if shape == "triangle":  # apex up
        return (np.abs(dy) < r) & (np.abs(dx) < (dy + r) / 2)
    if shape == "cross":
        arm = r / 3
        return ((np.abs(dx) < arm) & (np.abs(dy) < r)) | ((np.abs(dy) < arm) & (np.abs(dx) < r))
    if shape == "ring":
        return (d < r) & (d > 0.55 * r)
    raise ValueError(f"Unknown shape {shape!r}.")


@dataclasses.dataclass(frozen=True)
class SyntheticSource:
    """Random-access source of {"image": uint8 [H, W, 3], "text": str, "label": int}."""

    split: str = "train"
    num_examples: int = 10_000_000
    image_size: int = 32
    seed: int = 0

    def __post_init__(self) -> None:
        if self.split not in _SPLITS:
            raise ValueError(f"Unknown split {self.split!r}; use one of {tuple(_SPLITS)}.")

    def __len__(self) -> int:
        return self.num_examples

    def __repr__(self) -> str:  # Grain compares reprs when restoring a DataLoader
        return (
            f"SyntheticSource(split={self.split!r}, num_examples={self.num_examples},"
            f" image_size={self.image_size}, seed={self.seed})"
        )

    @property
    def class_names(self) -> tuple[str, ...]:
        return CLASS_NAMES

    def _draw(self, index: int) -> tuple[np.random.Generator, dict[str, str], int]:
        """The example's generator, attributes and caption template index, in draw order."""
        if not 0 <= index < self.num_examples:
            raise IndexError(f"Index {index} out of range [0, {self.num_examples}).")
        rng = np.random.default_rng([self.seed, _SPLITS[self.split], int(index)])
        attributes = dict(
            shape=SHAPES[rng.integers(len(SHAPES))],
            colour=list(COLOURS)[rng.integers(len(COLOURS))],
            size=list(SIZES)[rng.integers(len(SIZES))],
            position=list(POSITIONS)[rng.integers(len(POSITIONS))],
        )
        return rng, attributes, int(rng.integers(len(TRAIN_TEMPLATES)))

    def captions(self, index: int, count: int) -> list[str]:
        """`count` captions of example `index`: its own, then the next training templates.

        Retrieval benchmarks pair each image with several captions (five in COCO); these
        say the same thing about the same image in different words, deterministically.
        """
        if not 1 <= count <= len(TRAIN_TEMPLATES):
            raise ValueError(f"count must be in [1, {len(TRAIN_TEMPLATES)}], got {count}.")
        _, attributes, first = self._draw(index)
        n = len(TRAIN_TEMPLATES)
        return [TRAIN_TEMPLATES[(first + j) % n].format(**attributes) for j in range(count)]

    def __getitem__(self, index: int) -> dict:
        rng, attributes, template = self._draw(index)
        shape, colour, size, position = (
            attributes[k] for k in ("shape", "colour", "size", "position")
        )

        n = self.image_size
        grid = (np.arange(n) + 0.5) / n
        r = SIZES[size] * rng.uniform(0.9, 1.1)
        cy, cx = np.clip(np.array(POSITIONS[position]) + rng.uniform(-0.04, 0.04, 2), r, 1 - r)
        mask = _mask(shape, grid[:, None] - cy, grid[None, :] - cx, r)
        image = rng.normal(rng.uniform(60, 140), 10, (n, n, 3))
        rgb = np.array(COLOURS[colour]) + rng.uniform(-20, 20, 3)
        image[mask] = rgb
        caption = TRAIN_TEMPLATES[template].format(**attributes)
        return {
            "image": np.clip(image, 0, 255).astype(np.uint8),
            "text": caption,
            "label": np.int32(CLASS_NAMES.index(f"{colour} {shape}")),
        }
