"""Images on the host: decode, crop and resize to uint8 [size, size, 3].

Training takes a random resized crop (CLIP's augmentation: a box of `scale` of the area
and `ratio` aspect, torchvision's sampling rule); evaluation resizes the shorter side and
takes the centre, as one crop box resized in one go. Normalisation happens on the device
(train/step.py `normalize_images`), so batches stay uint8: 4x less host memory and
transfer than float32.

Decoders and resizers are registries; "auto" picks the fastest one installed, by the
measurements in docs/data.md (simplejpeg decodes JPEG about 1.5x faster than Pillow, and
OpenCV resizes about 6x faster than Pillow's bicubic). Plain Pillow always works. A JPEG
much larger than the crop is decoded at a reduced DCT scale (never below the output
size), which is both faster and an anti-aliasing filter.
"""

import dataclasses
import io
import math
from collections.abc import Callable

import numpy as np
from PIL import Image

from mmjax.registry import Registry

DECODERS = Registry("image decoder")
RESIZERS = Registry("image resizer")
# Fastest first (docs/data.md); "auto" takes the first one whose module imports.
_AUTO_ORDER = {"decoder": ("simplejpeg", "pil"), "resizer": ("cv2", "pil")}

Box = tuple[float, float, float, float]  # top, left, height, width as fractions of the image
Decoder = Callable[[bytes, tuple[int, int]], np.ndarray]
Resizer = Callable[[np.ndarray, tuple[int, int, int, int], int], np.ndarray]


def _rgb(image: Image.Image) -> np.ndarray:
    return np.asarray(image if image.mode == "RGB" else image.convert("RGB"))


@DECODERS.register("pil")
def decode_pil(data: bytes, min_hw: tuple[int, int] = (0, 0)) -> np.ndarray:
    """Any format Pillow reads; JPEGs drafted to the smallest scale >= `min_hw`."""
    with Image.open(io.BytesIO(data)) as image:
        if image.format == "JPEG" and min(min_hw) > 0:
            image.draft("RGB", (min_hw[1], min_hw[0]))
        return _rgb(image)


@DECODERS.register("simplejpeg")
def decode_simplejpeg(data: bytes, min_hw: tuple[int, int] = (0, 0)) -> np.ndarray:
    """libjpeg-turbo for JPEGs (strict: a truncated file raises); Pillow for the rest."""
    import simplejpeg

    if not simplejpeg.is_jpeg(data):
        return decode_pil(data, min_hw)
    try:
        return simplejpeg.decode_jpeg(
            data, "RGB", min_height=min_hw[0], min_width=min_hw[1], strict=True
        )
    except ValueError:
        return decode_pil(data, min_hw)  # CMYK and other JPEGs it declines; corrupt ones fail again


@RESIZERS.register("pil")
def resize_pil(image: np.ndarray, box: tuple[int, int, int, int], size: int) -> np.ndarray:
    """Antialiased bicubic, as torchvision's PIL path (what open_clip trains with)."""
    top, left, h, w = box
    pil = Image.fromarray(image)
    return np.asarray(
        pil.resize((size, size), Image.Resampling.BICUBIC, box=(left, top, left + w, top + h))
    )


@RESIZERS.register("cv2")
def resize_cv2(image: np.ndarray, box: tuple[int, int, int, int], size: int) -> np.ndarray:
    """Bicubic; area averaging when shrinking more than 2x, where bicubic would alias."""
    import cv2

    top, left, h, w = box
    crop = image[top : top + h, left : left + w]
    shrink = min(h, w) / size > 2
    return cv2.resize(
        crop, (size, size), interpolation=cv2.INTER_AREA if shrink else cv2.INTER_CUBIC
    )


def pick(kind: str, name: str) -> str:
    """`name`, or for "auto" the fastest installed (`kind` is "decoder" or "resizer")."""
    if name != "auto":
        return name
    for candidate in _AUTO_ORDER[kind]:
        module = {"simplejpeg": "simplejpeg", "cv2": "cv2"}.get(candidate)
        try:
            if module:
                __import__(module)
            return candidate
        except ImportError:
            continue
    return "pil"


def image_hw(data: bytes) -> tuple[int, int]:
    """(height, width) from the header alone."""
    with Image.open(io.BytesIO(data)) as image:
        return image.height, image.width


def random_box(
    hw: tuple[int, int], scale: tuple[float, float], ratio: tuple[float, float], rng
) -> Box:
    """A box of `scale` of the area and `ratio` aspect (w/h): torchvision's rule.

    Ten tries at a random area and log-uniform aspect that fit; otherwise the largest
    centred box whose aspect is clamped to `ratio`.
    """
    h, w = hw
    area = h * w
    log_ratio = (math.log(ratio[0]), math.log(ratio[1]))
    for _ in range(10):
        target = area * rng.uniform(*scale)
        aspect = math.exp(rng.uniform(*log_ratio))
        cw = round(math.sqrt(target * aspect))
        ch = round(math.sqrt(target / aspect))
        if 0 < cw <= w and 0 < ch <= h:
            top = int(rng.integers(0, h - ch + 1))
            left = int(rng.integers(0, w - cw + 1))
            return top / h, left / w, ch / h, cw / w
    aspect = w / h
    if aspect < min(ratio):
        cw, ch = w, round(w / min(ratio))
    elif aspect > max(ratio):
        cw, ch = round(h * max(ratio)), h
    else:
        cw, ch = w, h
    return (h - ch) // 2 / h, (w - cw) // 2 / w, ch / h, cw / w


def center_box(hw: tuple[int, int]) -> Box:
    """The centred square of the shorter side: resize-shorter-side + centre crop in one."""
    h, w = hw
    s = min(h, w)
    return (h - s) / 2 / h, (w - s) / 2 / w, s / h, s / w


def pixel_box(box: Box, hw: tuple[int, int]) -> tuple[int, int, int, int]:
    """A fractional box in whole pixels (top, left, height, width), at least 1x1, inside."""
    h, w = hw
    top, left = round(box[0] * h), round(box[1] * w)
    return (
        top,
        left,
        max(1, min(h - top, round(box[2] * h))),
        max(1, min(w - left, round(box[3] * w))),
    )


@dataclasses.dataclass(frozen=True)
class ImageTransform:
    """Encoded bytes or a decoded array -> uint8 [size, size, 3].

    `train`: a random resized crop; otherwise the centre crop. An array already of the
    output shape (the synthetic source draws at that size) is used as it is.
    """

    size: int
    train: bool = True
    scale: tuple[float, float] = (0.9, 1.0)
    ratio: tuple[float, float] = (3 / 4, 4 / 3)
    decoder: str = "auto"
    resizer: str = "auto"
    recrop: bool = False  # crop in training even an image already of the output size

    def __post_init__(self) -> None:
        object.__setattr__(self, "decoder", pick("decoder", self.decoder))
        object.__setattr__(self, "resizer", pick("resizer", self.resizer))
        DECODERS.get(self.decoder), RESIZERS.get(self.resizer)  # unknown names fail now

    def box(self, hw: tuple[int, int], rng) -> Box:
        return random_box(hw, self.scale, self.ratio, rng) if self.train else center_box(hw)

    def __call__(self, image: bytes | np.ndarray, rng: np.random.Generator) -> np.ndarray:
        if isinstance(image, np.ndarray):
            if image.ndim == 2:
                image = np.repeat(image[..., None], 3, axis=-1)
            same = image.shape == (self.size, self.size, 3) and image.dtype == np.uint8
            if same and not (self.recrop and self.train):
                return image
            box = self.box(image.shape[:2], rng)
        else:
            hw = image_hw(image)
            box = self.box(hw, rng)
            # Decode at the smallest DCT scale that keeps the crop at least `size` wide.
            min_hw = (
                min(hw[0], math.ceil(self.size / box[2])),
                min(hw[1], math.ceil(self.size / box[3])),
            )
            image = DECODERS.get(self.decoder)(image, min_hw)
        image = np.ascontiguousarray(image[..., :3])
        return RESIZERS.get(self.resizer)(image, pixel_box(box, image.shape[:2]), self.size)
