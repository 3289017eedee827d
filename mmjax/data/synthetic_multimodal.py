"""A built-in source of one class seen through five modalities: image, caption, sound,
motion and video, each made procedurally from the example's index.

Every example has one of the 25 classes of the synthetic image source (colour, shape),
and every modality carries it: the image and the video show the shape in its colour (the
video moving along a random straight path), the caption names it, the sound has the
colour's pitch and the shape's timbre and rhythm (synthetic_audio.py), the IMU window the
shape's motion at the colour's frequency (synthetic_imu.py). Everything is a pure function
of (seed, split, index), drawn with counter-based random numbers (counter_rng.py), so a
batch is made in a few array operations with no loop over its examples, an example is the
same alone or in any batch, and each modality's numbers are its own: asking for fewer
modalities costs nothing for the others and changes none of them.
"""

import dataclasses
from collections.abc import Callable, Sequence

import numpy as np

from mmjax.data import synthetic_audio, synthetic_imu
from mmjax.data.counter_rng import Draws, NoiseBank, example_keys
from mmjax.data.synthetic import (
    CLASS_NAMES,
    COLOURS,
    POSITIONS,
    SHAPES,
    SIZES,
    SPLITS,
    TRAIN_TEMPLATES,
    describe,
    draw_shapes,
)
from mmjax.registry import Registry

_PALETTE = np.asarray(list(COLOURS.values()), np.float32)
_RADII = np.asarray(list(SIZES.values()), np.float32)
_CENTRES = np.asarray(list(POSITIONS.values()), np.float32)
_ATTRIBUTES = {
    "shape": SHAPES,
    "colour": tuple(COLOURS),
    "size": tuple(SIZES),
    "position": tuple(POSITIONS),
}


@dataclasses.dataclass(frozen=True)
class Examples:
    """What all modalities of a batch share: the random numbers and the attributes."""

    draws: Draws
    label: np.ndarray  # [B] index into CLASS_NAMES: shape * 5 + colour
    size: np.ndarray  # [B] index into SIZES
    position: np.ndarray  # [B] index into POSITIONS
    template: np.ndarray  # [B] index into TRAIN_TEMPLATES

    @property
    def shape(self) -> np.ndarray:
        return self.label // len(COLOURS)

    @property
    def colour(self) -> np.ndarray:
        return self.label % len(COLOURS)

    def rows(self, rows: slice) -> "Examples":
        """The same for a slice of the examples."""
        draws = Draws(self.draws.keys[rows])
        return Examples(
            draws, self.label[rows], self.size[rows], self.position[rows], self.template[rows]
        )

    def attributes(self, i: int) -> dict[str, str]:
        """Example i's attribute names, as the caption templates take them."""
        values = dict(
            shape=self.shape[i], colour=self.colour[i], size=self.size[i], position=self.position[i]
        )
        return {k: _ATTRIBUTES[k][v] for k, v in values.items()}


@dataclasses.dataclass(frozen=True)
class Modality:
    """`render(source, examples)` -> [B, ...] array (a list of B str for text), made
    `rows` examples at a time: numpy's temporaries then stay small enough for malloc to
    reuse, where bigger ones are mapped fresh from the system and page-faulted each batch
    (audio at 128 rows: about 5000 page faults, over half its time, per batch)."""

    render: Callable[..., np.ndarray | list[str]]
    rows: int = 1 << 20


MODALITIES = Registry("synthetic modality")


def register(name: str, rows: int = 1 << 20) -> Callable:
    def decorator(render: Callable) -> Callable:
        MODALITIES.register(name)(Modality(render, rows))
        return render

    return decorator


# Noisy grey, as uint8 offsets: round(10 z) + 60 for z standard normal, clipped to [0, 175],
# so that adding a grey level of 0 to 80 gives backgrounds of mean 60 to 140 in [0, 255].
GREY = NoiseBank(
    lambda n: np.clip(
        np.rint(10 * np.random.default_rng(0x6EE7).standard_normal(n)) + 60, 0, 175
    ).astype(np.uint8)
)


def _look(
    examples: Examples, u: np.ndarray, shape: tuple[int, ...]
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """A drawn shape's radius [B] (its size within 10%), colour uint8 [B, 3] (each channel
    within 20 levels of the class colour) and uint8 background [B, *shape] (noisy grey),
    from 6 uniforms [B, 6] per example."""
    r = _RADII[examples.size] * (0.9 + 0.2 * u[:, 0])
    rgb = np.rint(_PALETTE[examples.colour] + 40 * u[:, 1:4] - 20).astype(np.uint8)
    grey = np.rint(80 * u[:, 4]).astype(np.uint8).reshape(-1, *(1,) * len(shape))
    return r, rgb, GREY.read(u[:, 5], shape) + grey


@register("image")
def image(source: "MultimodalSyntheticSource", examples: Examples) -> np.ndarray:
    """uint8 [B, S, S, 3]: the shape at its captioned size and position (synthetic.py)."""
    n = source.image_size
    u = examples.draws.uniform("image", (8,))
    r, rgb, background = _look(examples, u, (n, n, 3))
    r, offset = r.astype(np.float32), (0.08 * u[:, 6:8] - 0.04).astype(np.float32)
    centre = np.clip(_CENTRES[examples.position] + offset, r[:, None], 1 - r[:, None])
    return draw_shapes(examples.shape, centre[:, 0], centre[:, 1], r, rgb, background)


@register("video")
def video(source: "MultimodalSyntheticSource", examples: Examples) -> np.ndarray:
    """uint8 [B, F, S, S, 3]: the shape moving at constant speed from a random start to a
    random end (so in a random direction at a random speed), on fresh noise every frame."""
    n, frames = source.video_size, source.video_frames
    u = examples.draws.uniform("video", (10,))
    r, rgb, background = _look(examples, u, (frames, n, n, 3))
    r = r.astype(np.float32)[:, None]  # [B, 1]: the same in every frame
    start, end = (r + (1 - 2 * r) * u[:, k : k + 2].astype(np.float32) for k in (6, 8))
    progress = np.linspace(0, 1, frames, dtype=np.float32)[None, :, None]
    centre = start[:, None] + (end - start)[:, None] * progress  # [B, F, 2]
    shapes = examples.shape[:, None]
    return draw_shapes(shapes, centre[..., 0], centre[..., 1], r, rgb[:, None], background)


@register("text")
def text(source: "MultimodalSyntheticSource", examples: Examples) -> list[str]:
    """The caption: one of the training templates (synthetic.py), filled in."""
    return [describe(examples.attributes(i), t)[0] for i, t in enumerate(examples.template)]


@register("audio", rows=16)
def audio(source: "MultimodalSyntheticSource", examples: Examples) -> np.ndarray:
    """float32 [B, sample_rate * audio_seconds] in [-1, 1] (synthetic_audio.py)."""
    return synthetic_audio.render(
        examples.draws, examples.label, source.sample_rate, source.audio_seconds
    )


@register("imu")
def imu(source: "MultimodalSyntheticSource", examples: Examples) -> np.ndarray:
    """float32 [B, imu_rate * imu_seconds, 6] (synthetic_imu.py)."""
    return synthetic_imu.render(examples.draws, examples.label, source.imu_rate, source.imu_seconds)


ALL_MODALITIES = ("image", "text", "audio", "imu", "video")


def _render(modality: Modality, source: "MultimodalSyntheticSource", examples: Examples):
    """The modality of all `examples`, made `modality.rows` at a time."""
    n, rows = len(examples.label), modality.rows
    if n <= rows:
        return modality.render(source, examples)
    out = None
    for start in range(0, n, rows):
        part = modality.render(source, examples.rows(slice(start, start + rows)))
        if isinstance(part, list):
            out = (out or []) + part
            continue
        if out is None:
            out = np.empty((n, *part.shape[1:]), part.dtype)
        out[start : start + len(part)] = part
    return out


@dataclasses.dataclass(frozen=True)
class MultimodalSyntheticSource:
    """Random-access source of {modality: array, "label", "shape_label", "colour_label"}.

    `label` indexes CLASS_NAMES (colour and shape); `shape_label` and `colour_label` are
    its coarse parts (indices into SHAPES and COLOURS). Only the `modalities` asked for are
    made. `batch(indices)` makes many examples at once, stacked; `__getitem__` one, and
    Grain's batched reads (`_getitems`) use `batch`. The dataclass repr names every field,
    so it is stable, as Grain's checkpoints require.
    """

    split: str = "train"
    num_examples: int = 10_000_000
    seed: int = 0
    modalities: Sequence[str] = ALL_MODALITIES
    image_size: int = 32
    sample_rate: int = 8000
    audio_seconds: float = 1.0
    imu_rate: int = 50
    imu_seconds: float = 2.56
    video_frames: int = 8
    video_size: int = 32

    def __post_init__(self) -> None:
        if self.split not in SPLITS:
            raise ValueError(f"Unknown split {self.split!r}; use one of {tuple(SPLITS)}.")
        object.__setattr__(self, "modalities", tuple(self.modalities))
        for name in self.modalities:
            MODALITIES.get(name)  # fails early, naming the known ones
        if "audio" in self.modalities:
            synthetic_audio.wavetables(self.sample_rate)  # fails early for too low a rate

    def __len__(self) -> int:
        return self.num_examples

    @property
    def class_names(self) -> tuple[str, ...]:
        return CLASS_NAMES

    def examples(self, indices: Sequence[int] | np.ndarray) -> Examples:
        """The shared draws and attributes of examples `indices`."""
        indices = np.asarray(indices, np.int64).reshape(-1)
        if len(indices) and not (indices.min() >= 0 and indices.max() < self.num_examples):
            bad = indices[(indices < 0) | (indices >= self.num_examples)][0]
            raise IndexError(f"Index {bad} out of range [0, {self.num_examples}).")
        draws = Draws(example_keys(self.seed, SPLITS[self.split], indices))
        counts = {
            "label": len(CLASS_NAMES),
            "size": len(SIZES),
            "position": len(POSITIONS),
            "template": len(TRAIN_TEMPLATES),
        }
        bits = draws.bits("attributes", (len(counts),))
        drawn = {
            k: (bits[:, i] % np.uint64(n)).astype(np.int64)
            for i, (k, n) in enumerate(counts.items())
        }
        return Examples(draws, **drawn)

    def batch(self, indices: Sequence[int] | np.ndarray) -> dict:
        """Examples `indices`, each field stacked: arrays [B, ...], text a list of B str."""
        examples = self.examples(indices)
        out = {name: _render(MODALITIES.get(name), self, examples) for name in self.modalities}
        out["label"] = examples.label.astype(np.int32)
        out["shape_label"] = examples.shape.astype(np.int32)
        out["colour_label"] = examples.colour.astype(np.int32)
        return out

    def _getitems(self, indices: Sequence[int]) -> list[dict]:
        batch = self.batch(indices)
        return [{k: v[i] for k, v in batch.items()} for i in range(len(indices))]

    def __getitem__(self, index: int) -> dict:
        return self._getitems([index])[0]

    def captions(self, index: int, count: int) -> list[str]:
        """`count` captions of example `index`: its own, then the next training templates."""
        if not 1 <= count <= len(TRAIN_TEMPLATES):
            raise ValueError(f"count must be in [1, {len(TRAIN_TEMPLATES)}], got {count}.")
        examples = self.examples([index])
        return describe(examples.attributes(0), int(examples.template[0]), count)
