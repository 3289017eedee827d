"""`config.data.modalities`: what each modality of a batch is, and how a record's field
becomes its array.

Every entry names a modality of the batch (the key the model's tower of that name reads)
and its `type` (a registered reader: image, text, label, ...), the record fields to look
for (`key`, ";"-separated, first present wins; paths into nested records like TFDS's
"captions/text" work), and the type's own options. A reader turns a field's raw value
(encoded bytes, a str, an array) into a fixed-shape array, or says why the record must be
skipped (`Skipped`, counted by reason: `missing_<modality>`, `bad_<modality>`, ...).

Adding a modality type is one registered reader factory with the defaults of its fields.
"""

import dataclasses
import logging
from collections.abc import Callable
from typing import Any

import ml_collections
import numpy as np

from mmjax.data.images import ImageTransform
from mmjax.data.skipped import Skipped
from mmjax.data.tokenizers import Tokenizer, build_tokenizer
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
    """Encoded image bytes or a decoded array -> uint8 [size, size, 3] (images.py)."""

    def __init__(self, name: str, transform: ImageTransform):
        self.name, self.transform = name, transform
        self.shape, self.dtype = (transform.size, transform.size, 3), np.dtype(np.uint8)

    def __call__(self, value, rng):
        if isinstance(value, bytes) and not value:
            return Skipped(f"missing_{self.name}")
        try:
            return self.transform(value, rng)
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
)
def image(name: str, c: ml_collections.ConfigDict, config, train: bool) -> ImageReader:
    return ImageReader(name, image_transform(c, train))


def image_transform(c: ml_collections.ConfigDict, train: bool = True) -> ImageTransform:
    """The crop of an image modality's config (random for training, centre otherwise)."""
    return ImageTransform(
        c.size, train, tuple(c.crop_scale), tuple(c.crop_ratio), c.decoder, c.resizer
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
    """

    def __init__(self, name: str, tokenizer: Tokenizer, captions: int = 0, train: bool = True):
        self.name, self.tokenizer, self.captions, self.train = name, tokenizer, captions, train
        self.multi = captions > 0
        length = (tokenizer.context_length,)
        self.shape = (captions, *length) if self.multi else length
        self.dtype = np.dtype(np.int32)

    def __call__(self, value, rng):
        if not self.multi:
            text = text_of(value, self.name)
            return text if isinstance(text, Skipped) else self.tokenizer(text)
        texts = [text_of(v, self.name) for v in value]
        good = [t for t in texts if not isinstance(t, Skipped)]
        if not good:
            return texts[0] if texts else Skipped(f"missing_{self.name}")
        k = self.captions
        if len(good) > k:
            order = rng.permutation(len(good))[:k] if self.train else range(k)
            good = [good[i] for i in order]
        picked = [good[i % len(good)] for i in range(k)]
        return np.stack([self.tokenizer(t) for t in picked])


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


@register_modality(
    "text",
    reasons=("missing", "bad", "empty"),
    key="txt;text",
    tokenizer="simple",  # simple | clip_bpe | sentencepiece | bytes (docs/data.md)
    tokenizer_model="",  # sentencepiece: the .model file
    captions=0,  # K > 0: K captions per example ([K, L]), e.g. key="json/captions"
)
def text(name: str, c: ml_collections.ConfigDict, config, train: bool) -> TextReader:
    return TextReader(name, modality_tokenizer(config, name), c.captions, train)


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
