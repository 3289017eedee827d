"""A built-in captioned-image source made procedurally from each example's index.

Each image shows one shape (circle, square, triangle, cross, ring) in one colour, of one
of three sizes, at one of nine positions, on a noisy grey background. The caption
describes it with one of several training templates; the class is (colour, shape).
Everything is a pure function of (seed, split, index), so the demo trains and evaluates
with no download, identically on every machine and in every process.
"""

import dataclasses
from collections.abc import Callable, Sequence

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
SPLITS = {"train": 0, "eval": 1}


def _circle(dy: np.ndarray, dx: np.ndarray, r: np.ndarray) -> np.ndarray:
    return np.sqrt(dy * dy + dx * dx) < r


def _square(dy: np.ndarray, dx: np.ndarray, r: np.ndarray) -> np.ndarray:
    return np.maximum(np.abs(dy), np.abs(dx)) < 0.85 * r


def _triangle(dy: np.ndarray, dx: np.ndarray, r: np.ndarray) -> np.ndarray:  # apex up
    return (np.abs(dy) < r) & (np.abs(dx) < (dy + r) / 2)


def _cross(dy: np.ndarray, dx: np.ndarray, r: np.ndarray) -> np.ndarray:
    arm = r / 3
    return ((np.abs(dx) < arm) & (np.abs(dy) < r)) | ((np.abs(dy) < arm) & (np.abs(dx) < r))


def _ring(dy: np.ndarray, dx: np.ndarray, r: np.ndarray) -> np.ndarray:
    d = np.sqrt(dy * dy + dx * dx)
    return (d < r) & (d > 0.55 * r)


# Shape -> boolean mask of the shape of radius r at offsets (dy, dx) from its centre.
MASKS = {
    "circle": _circle,
    "square": _square,
    "triangle": _triangle,
    "cross": _cross,
    "ring": _ring,
}
assert tuple(MASKS) == SHAPES


def per_kind(kinds: np.ndarray, functions: Sequence[Callable], *arrays: np.ndarray) -> np.ndarray:
    """`functions[kinds[i]]` of the i-th rows of `arrays`, for all i, one call per kind.

    `kinds` (int) and every array share their leading shape; so a batch that mixes classes is
    drawn kind by kind, each kind vectorised over its rows, never one example at a time.
    """
    out, flat = None, kinds.reshape(-1)
    for k, function in enumerate(functions):
        rows = np.flatnonzero(flat == k)  # integer rows: faster to gather than a bool mask
        if len(rows) == len(flat):
            return function(*arrays)
        if len(rows):
            part = function(*(a.reshape(len(flat), *a.shape[kinds.ndim :])[rows] for a in arrays))
            if out is None:
                out = np.empty((len(flat), *part.shape[1:]), part.dtype)
            out[rows] = part
    return out.reshape(kinds.shape + out.shape[1:])


def draw_shapes(
    shapes: np.ndarray,
    cy: np.ndarray,
    cx: np.ndarray,
    r: np.ndarray,
    rgb: np.ndarray,
    background: np.ndarray,
) -> np.ndarray:
    """uint8 images [..., n, n, 3]: shape `SHAPES[shapes]` in colour `rgb` on `background`.

    `shapes`, the centres `cy`, `cx` and radii `r` (in units of the image side) broadcast to
    the images' leading shape [...], and `rgb` [..., 3] too; `background` [..., n, n, 3] is
    uint8 or float (then clipped to [0, 255]), and may be painted in place. Vectorised over
    any number of images (a batch, a batch of video frames): the masks are made kind by
    kind, and the shapes' pixels written by index (a `where` broadcasting 3 channels
    against the image runs numpy's inner loop 3 elements at a time, 10x slower).
    """
    shapes, cy, cx, r = np.broadcast_arrays(shapes, cy, cx, r)
    n = background.shape[-2]
    grid = ((np.arange(n) + 0.5) / n).astype(cy.dtype)
    dy, dx = grid[:, None] - cy[..., None, None], grid[None, :] - cx[..., None, None]
    mask = per_kind(shapes, tuple(MASKS.values()), dy, dx, r[..., None, None])
    image = np.ascontiguousarray(background)
    pixels = np.flatnonzero(mask)  # painted pixels, over all images
    owners = pixels // (n * n)  # the image each belongs to
    colours = np.broadcast_to(rgb, (*shapes.shape, 3)).reshape(-1, 3)
    channels, pixels = image.reshape(-1), pixels * 3
    for c in range(3):  # one channel at a time: rows of 3 elements are slow to index
        channels[pixels + c] = colours[:, c][owners]
    return image if image.dtype == np.uint8 else np.clip(image, 0, 255).astype(np.uint8)


def describe(attributes: dict[str, str], first: int, count: int = 1) -> list[str]:
    """`count` captions of an example: training template `first`, then the next ones."""
    n = len(TRAIN_TEMPLATES)
    return [TRAIN_TEMPLATES[(first + j) % n].format(**attributes) for j in range(count)]


@dataclasses.dataclass(frozen=True)
class SyntheticSource:
    """Random-access source of {"image": uint8 [H, W, 3], "text": str, "label": int, ...}.

    Records also carry the coarse labels "shape_label" and "colour_label", and with
    `num_captions` > 0 a list "captions" of that many captions (1-to-K objectives).
    """

    split: str = "train"
    num_examples: int = 10_000_000
    image_size: int = 32
    seed: int = 0
    num_captions: int = 0

    def __post_init__(self) -> None:
        if self.split not in SPLITS:
            raise ValueError(f"Unknown split {self.split!r}; use one of {tuple(SPLITS)}.")

    def __len__(self) -> int:
        return self.num_examples

    def __repr__(self) -> str:  # Grain compares reprs when restoring a DataLoader
        return (
            f"SyntheticSource(split={self.split!r}, num_examples={self.num_examples},"
            f" image_size={self.image_size}, seed={self.seed}, num_captions={self.num_captions})"
        )

    @property
    def class_names(self) -> tuple[str, ...]:
        return CLASS_NAMES

    def _draw(self, index: int) -> tuple[np.random.Generator, dict[str, str], int]:
        """The example's generator, attributes and caption template index, in draw order."""
        if not 0 <= index < self.num_examples:
            raise IndexError(f"Index {index} out of range [0, {self.num_examples}).")
        rng = np.random.default_rng([self.seed, SPLITS[self.split], int(index)])
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
        return describe(attributes, first, count)

    def __getitem__(self, index: int) -> dict:
        rng, attributes, template = self._draw(index)
        shape, colour, size, position = (
            attributes[k] for k in ("shape", "colour", "size", "position")
        )

        n = self.image_size
        r = SIZES[size] * rng.uniform(0.9, 1.1)
        cy, cx = np.clip(np.array(POSITIONS[position]) + rng.uniform(-0.04, 0.04, 2), r, 1 - r)
        background = rng.normal(rng.uniform(60, 140), 10, (1, n, n, 3))
        rgb = np.array(COLOURS[colour]) + rng.uniform(-20, 20, 3)
        shape_id, cy, cx, r = (np.array([x]) for x in (SHAPES.index(shape), cy, cx, r))
        image = draw_shapes(shape_id, cy, cx, r, rgb, background)[0]  # a batch of one
        record = {
            "image": image,
            "text": describe(attributes, template)[0],
            "label": np.int32(CLASS_NAMES.index(f"{colour} {shape}")),
            "shape_label": np.int32(SHAPES.index(shape)),
            "colour_label": np.int32(list(COLOURS).index(colour)),
        }
        if self.num_captions:
            record["captions"] = describe(attributes, template, self.num_captions)
        return record
