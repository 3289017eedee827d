"""Host-side augmentations that make independent views of one example (SimCLR, SLIP).

Two modalities of the batch that read the same record field, each with its own options
here, are two augmented views (examples.Prepare seeds every modality's generator apart).

Images (uint8 [H, W, 3], after the random resized crop), SimCLR's list (Chen et al. 2020,
appendix A): horizontal flip; colour jitter with probability `p_jitter` (brightness,
contrast, saturation by factors in [1 - s, 1 + s], hue by a rotation of up to s / 4 turn
in YIQ space, in random order; SimCLR uses s = 0.8 at probability 0.8, SLIP s = 0.4);
grayscale; Gaussian blur of sigma in [0.1, 2.0] * size / 224 (SimCLR's sigma range at
its resolution, scaled to ours).

Signals (float32 [T] audio or [T, C] sensors): additive Gaussian noise of `noise` times
the example's standard deviation, and `time_masks` spans of up to `time_mask_width` of the
length set to zero (SpecAugment's time masks, on the raw signal).
"""

import dataclasses

import numpy as np
from PIL import Image, ImageFilter

# ITU-R BT.601 luma weights, as torchvision's grayscale and saturation.
_LUMA = np.array([0.299, 0.587, 0.114], np.float32)
_RGB_TO_YIQ = np.array(
    [[0.299, 0.587, 0.114], [0.596, -0.274, -0.322], [0.211, -0.523, 0.312]], np.float32
)
_YIQ_TO_RGB = np.linalg.inv(_RGB_TO_YIQ).astype(np.float32)


def _gray(x: np.ndarray) -> np.ndarray:
    return (x @ _LUMA)[..., None]


def _brightness(x: np.ndarray, f: float) -> np.ndarray:
    return x * f


def _contrast(x: np.ndarray, f: float) -> np.ndarray:
    return (x - _gray(x).mean()) * f + _gray(x).mean()


def _saturation(x: np.ndarray, f: float) -> np.ndarray:
    g = _gray(x)
    return (x - g) * f + g


def _hue(x: np.ndarray, turns: float) -> np.ndarray:
    """Rotates the chroma plane (I, Q) by `turns` of a full turn."""
    a = 2 * np.pi * turns
    rot = np.array([[1, 0, 0], [0, np.cos(a), -np.sin(a)], [0, np.sin(a), np.cos(a)]], np.float32)
    return x @ (_YIQ_TO_RGB @ rot @ _RGB_TO_YIQ).T


@dataclasses.dataclass(frozen=True)
class ImageAugment:
    """Flip, colour jitter, grayscale and blur of a uint8 image (module docstring).

    Every probability 0 (the default) leaves the image as it is and draws nothing."""

    flip: float = 0.0  # probability of a horizontal flip
    color_jitter: float = 0.0  # strength s; 0: none
    p_jitter: float = 0.8  # probability of the jitter when s > 0
    grayscale: float = 0.0  # probability
    blur: float = 0.0  # probability

    @property
    def active(self) -> bool:
        return any((self.flip, self.color_jitter, self.grayscale, self.blur))

    def __call__(self, image: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        if not self.active:
            return image
        if self.flip and rng.random() < self.flip:
            image = image[:, ::-1]
        x = None
        if self.color_jitter and rng.random() < self.p_jitter:
            s = self.color_jitter
            x = image.astype(np.float32)
            ops = [
                (_brightness, rng.uniform(1 - s, 1 + s)),
                (_contrast, rng.uniform(1 - s, 1 + s)),
                (_saturation, rng.uniform(1 - s, 1 + s)),
                (_hue, rng.uniform(-s / 4, s / 4)),
            ]
            for i in rng.permutation(len(ops)):
                op, f = ops[i]
                x = np.clip(op(x, f), 0, 255)
        if self.grayscale and rng.random() < self.grayscale:
            x = np.repeat(_gray(image.astype(np.float32) if x is None else x), 3, axis=-1)
        if x is not None:
            image = np.round(x).astype(np.uint8)
        if self.blur and rng.random() < self.blur:
            sigma = rng.uniform(0.1, 2.0) * image.shape[0] / 224
            pil = Image.fromarray(np.ascontiguousarray(image))
            image = np.asarray(pil.filter(ImageFilter.GaussianBlur(sigma)))
        return np.ascontiguousarray(image)


@dataclasses.dataclass(frozen=True)
class SignalAugment:
    """Additive noise and zeroed time spans of a float32 [T] or [T, C] signal."""

    noise: float = 0.0  # noise std as a fraction of the example's std
    time_masks: int = 0  # spans per example
    time_mask_width: float = 0.1  # each span up to this fraction of T

    def __call__(self, x: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        if not (self.noise or self.time_masks):
            return x
        x = np.array(x, np.float32)
        if self.noise:
            x += rng.normal(size=x.shape).astype(np.float32) * self.noise * float(x.std())
        t = len(x)
        for _ in range(self.time_masks):
            width = int(rng.integers(0, max(1, int(self.time_mask_width * t)) + 1))
            start = int(rng.integers(0, t - width + 1))
            x[start : start + width] = 0.0
        return x
