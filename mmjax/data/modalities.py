"""`config.data.modalities`: what each modality of a batch is, and how a record's field
becomes its array.

Every entry names a modality of the batch (the key the model's tower of that name reads)
and its `type` (a registered reader: image, text, label, audio, timeseries, video), the
record fields to look for (`key`, ";"-separated, first present wins; paths into nested
records like TFDS's "captions/text" work), and the type's own options. A reader turns a
field's raw value (encoded bytes, a str, an array) into a fixed-shape array, or says why
the record must be skipped (`Skipped`, counted by reason: `missing_<modality>`,
`bad_<modality>`, ...).

Adding a modality type is one registered reader factory with the defaults of its fields.
"""

import dataclasses
import logging
from collections.abc import Callable
from typing import Any

import ml_collections
import numpy as np

from mmjax.data.augment import ImageAugment
from mmjax.data.images import ImageTransform
from mmjax.data.skipped import Skipped
from mmjax.data.tokenizers import Tokenizer, build_tokenizer, fits, pack
from mmjax.registry import Registry

MODALITY_TYPES = Registry("data modality type")

COMMON_DEFAULTS = dict(type="", key="")


@dataclasses.dataclass(frozen=True)
class ModalityType:
    """`build(name, modality_config, config, train) -> Reader`, its defaults and the skip
    reasons it can give (suffixes: "bad" -> "bad_<modality>")."""

    build: Callable[..., "Reader"]
    defaults: dict[str, Any]
    reasons: tuple[str, ...] = ("missing", "bad")


class Reader:
    """A field's raw value -> an array of `shape` and `dtype`, or a `Skipped`."""

    shape: tuple[int, ...]
    dtype: np.dtype

    def __call__(self, value: Any, rng: np.random.Generator) -> np.ndarray | Skipped:
        raise NotImplementedError


def register_modality(name: str, reasons: tuple[str, ...] = ("missing", "bad"), **defaults):
    """Registers a reader factory `build(name, c, config, train)` with its config defaults."""

    def decorator(build: Callable) -> Callable:
        fields = {**COMMON_DEFAULTS, "type": name, **defaults}
        MODALITY_TYPES.register(name)(ModalityType(build, fields, reasons))
        return build

    return decorator


def modality_defaults(name: str) -> dict[str, Any]:
    return dict(MODALITY_TYPES.get(name).defaults)


def keys_of(spec: str) -> tuple[str, ...]:
    """ "jpg;png" -> ("jpg", "png"): the fields to look for, first present wins."""
    return tuple(k.strip() for k in spec.split(";") if k.strip())


def build_readers(
    config: ml_collections.ConfigDict, train: bool = True
) -> dict[str, tuple[tuple[str, ...], Reader]]:
    """{modality: (record fields to try, reader)} for every entry of config.data.modalities."""
    out = {}
    for name, c in config.data.modalities.items():
        kind = MODALITY_TYPES.get(c.type)
        out[name] = keys_of(c.key), kind.build(name, c, config, train)
    return out


def example_specs(config: ml_collections.ConfigDict) -> dict[str, tuple[tuple[int, ...], np.dtype]]:
    """{modality: (shape of one example, dtype)}, as the pipeline yields them."""
    return {name: (r.shape, r.dtype) for name, (_, r) in build_readers(config, False).items()}


def skip_reasons(config: ml_collections.ConfigDict) -> tuple[str, ...]:
    """Every reason a record can be skipped with this data config, in a stable order."""
    reasons = []
    for name, c in config.data.modalities.items():
        reasons += [f"{r}_{name}" for r in MODALITY_TYPES.get(c.type).reasons]
    return (*reasons, "bad_record", "unreadable_shard")


# ------------------------------------------------------------------------------ readers


class ImageReader(Reader):
    """Encoded image bytes or a decoded array -> uint8 [size, size, 3] (images.py), then
    in training the view augmentations (augment.py), if any."""

    def __init__(self, name: str, transform: ImageTransform, augment: ImageAugment | None = None):
        self.name, self.transform, self.augment = name, transform, augment
        self.shape, self.dtype = (transform.size, transform.size, 3), np.dtype(np.uint8)

    def __call__(self, value, rng):
        if isinstance(value, bytes) and not value:
            return Skipped(f"missing_{self.name}")
        try:
            image = self.transform(value, rng)
            return self.augment(image, rng) if self.augment else image
        except Exception as e:
            logging.debug("Bad %s: %s", self.name, e)
            return Skipped(f"bad_{self.name}", detail=f"{type(e).__name__}: {e}")


@register_modality(
    "image",
    key="jpg;jpeg;png;webp;image",
    size=224,
    crop_scale=(0.9, 1.0),  # training's random resized crop: area fraction (CLIP's)
    crop_ratio=(3 / 4, 4 / 3),  # and aspect range
    decoder="auto",  # auto | pil | simplejpeg
    resizer="auto",  # auto | pil | cv2
    # Augmented views (SimCLR / SLIP; data/augment.py), training only; 0 = off.
    recrop=False,  # crop even images already at `size` (the synthetic source draws them so)
    flip=0.0,  # probability of a horizontal flip
    color_jitter=0.0,  # strength (SimCLR 0.8, SLIP 0.4), applied with probability 0.8
    grayscale=0.0,  # probability
    blur=0.0,  # probability of a Gaussian blur
)
def image(name: str, c: ml_collections.ConfigDict, config, train: bool) -> ImageReader:
    augment = ImageAugment(c.flip, c.color_jitter, 0.8, c.grayscale, c.blur)
    return ImageReader(name, image_transform(c, train), augment if train else None)


def image_transform(c: ml_collections.ConfigDict, train: bool = True) -> ImageTransform:
    """The crop of an image modality's config (random for training, centre otherwise)."""
    return ImageTransform(
        c.size,
        train,
        tuple(c.crop_scale),
        tuple(c.crop_ratio),
        c.decoder,
        c.resizer,
        bool(c.get("recrop", False)),
    )


def text_of(value, name: str = "text") -> str | Skipped:
    """A caption as clean str, or why it is unusable."""
    if isinstance(value, np.ndarray) and value.ndim == 0:
        value = value.item()
    if isinstance(value, bytes | np.bytes_):
        try:
            value = bytes(value).decode("utf-8")
        except UnicodeDecodeError as e:
            return Skipped(f"bad_{name}", detail=str(e))
    text = str(value).strip()
    return text if text else Skipped(f"empty_{name}")


class TextReader(Reader):
    """A caption (str or UTF-8 bytes) -> int32 token ids [context_length]; with `captions`
    K > 0, a record's list of captions -> [K, context_length] (1-to-K objectives).

    With more than K captions, K distinct ones are drawn (training) or the first K taken
    (evaluation); with fewer, they are repeated in turn. Unusable captions are dropped
    first; a record with none left is skipped.

    A caption longer than the context is cut, keeping the end token (`too_long="truncate"`,
    what CLIP and open_clip do), or unusable (`"skip"`: counted as `long_<modality>`).
    """

    def __init__(
        self,
        name: str,
        tokenizer: Tokenizer,
        captions: int = 0,
        train: bool = True,
        too_long: str = "truncate",
    ):
        if too_long not in TOO_LONG:
            raise ValueError(f"too_long={too_long!r}: use one of {TOO_LONG}.")
        self.name, self.tokenizer, self.captions, self.train = name, tokenizer, captions, train
        self.skip_long = too_long == "skip"
        self.multi = captions > 0
        length = (tokenizer.context_length,)
        self.shape = (captions, *length) if self.multi else length
        self.dtype = np.dtype(np.int32)

    def _usable(self, value) -> str | np.ndarray | Skipped:
        """A caption as clean text (tokenized when picked), or with `too_long="skip"` as
        its tokens already (its length decides), or why it is unusable."""
        text = text_of(value, self.name)
        if not self.skip_long or isinstance(text, Skipped):
            return text
        t = self.tokenizer
        ids = t.ids(text)
        if not fits(t, ids):
            return Skipped(
                f"long_{self.name}", detail=f"{len(ids)} tokens > {t.context_length - 2}"
            )
        return pack(ids, t.bos, t.eot, t.context_length)

    def _tokens(self, text: str | np.ndarray | Skipped) -> np.ndarray | Skipped:
        return self.tokenizer(text) if isinstance(text, str) else text

    def __call__(self, value, rng):
        if not self.multi:
            return self._tokens(self._usable(value))
        texts = [self._usable(v) for v in value]
        good = [t for t in texts if not isinstance(t, Skipped)]
        if not good:
            return texts[0] if texts else Skipped(f"missing_{self.name}")
        k = self.captions
        if len(good) > k:
            order = rng.permutation(len(good))[:k] if self.train else range(k)
            good = [good[i] for i in order]
        picked = [good[i % len(good)] for i in range(k)]
        return np.stack([self._tokens(t) for t in picked])


def tower_config(config: ml_collections.ConfigDict, name: str) -> ml_collections.ConfigDict:
    """The model tower a modality feeds (following `share`)."""
    towers = config.model.towers
    if name not in towers:
        raise ValueError(
            f"config.data.modalities.{name} is text, which needs a tower of the same name in"
            f" config.model.towers (for its vocabulary and context); towers: {list(towers)}."
        )
    c = towers[name]
    return towers[c.share] if c.share else c


TOO_LONG = ("truncate", "skip")


@register_modality(
    "text",
    reasons=("missing", "bad", "empty", "long"),
    key="txt;text",
    tokenizer="simple",  # simple | clip_bpe | sentencepiece | bytes (docs/data.md)
    tokenizer_model="",  # sentencepiece: the .model file
    captions=0,  # K > 0: K captions per example ([K, L]), e.g. key="json/captions"
    too_long="truncate",  # captions over the context: truncate (CLIP) | skip (long_<m>)
)
def text(name: str, c: ml_collections.ConfigDict, config, train: bool) -> TextReader:
    tokenizer = modality_tokenizer(config, name)
    return TextReader(name, tokenizer, c.captions, train, c.too_long)


def modality_tokenizer(config: ml_collections.ConfigDict, name: str) -> Tokenizer:
    """The tokenizer of text modality `name`, sized by its tower's vocabulary and context."""
    c = config.data.modalities[name]
    return build_tokenizer(c.tokenizer, tower_config(config, name), c.tokenizer_model)


class LabelReader(Reader):
    """An integer class (int, numpy scalar, or ASCII digits as webdataset's .cls) -> int32."""

    shape, dtype = (), np.dtype(np.int32)

    def __init__(self, name: str):
        self.name = name

    def __call__(self, value, rng):
        try:
            if isinstance(value, bytes | np.bytes_):
                value = bytes(value).decode("ascii").strip()
            return np.int32(int(value))
        except (ValueError, TypeError, UnicodeDecodeError) as e:
            return Skipped(f"bad_{self.name}", detail=f"{type(e).__name__}: {e}")


@register_modality("label", key="cls;label")
def label(name: str, c: ml_collections.ConfigDict, config, train: bool) -> LabelReader:
    return LabelReader(name)


# The readers of sampled signals register themselves (audio, timeseries, video).
from mmjax.data import signals  # noqa: E402, F401
