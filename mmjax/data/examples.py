"""A raw record -> a train example {"image", "tokens"}, or the reason to skip it.

Every source yields raw examples {"image": encoded bytes or an array, "text": bytes or
str, "key": str} (fields may be missing). Bad data never raises here: a corrupt or
truncated image, a missing or empty caption, non-UTF-8 text become a `Skipped` marker
that travels down the pipeline in the example's place and is counted when batches are
formed (stages.py), so nothing is dropped silently and a resumed run counts the same.
"""

import dataclasses
import logging

import numpy as np

from mmjax.data.images import ImageTransform
from mmjax.data.tokenizers import Tokenizer

# Every reason a record can be skipped; metrics report each as data_skipped/<reason>.
REASONS = (
    "missing_image",
    "bad_image",
    "missing_text",
    "bad_text",
    "empty_text",
    "bad_record",
    "unreadable_shard",
)


@dataclasses.dataclass(frozen=True)
class Skipped:
    """Stands for a record that was skipped, and says why."""

    reason: str
    key: str = ""
    detail: str = ""

    def __post_init__(self) -> None:
        if self.reason not in REASONS:
            raise ValueError(f"Unknown skip reason {self.reason!r}; known: {REASONS}.")


def keys_of(spec: str) -> tuple[str, ...]:
    """ "jpg;png" -> ("jpg", "png"): the fields to look for, first present wins."""
    return tuple(k.strip() for k in spec.split(";") if k.strip())


def from_fields(fields: dict, image_keys: tuple[str, ...], text_keys: tuple[str, ...]) -> dict:
    """A record's fields (a webdataset sample, a TFDS example) -> a raw example.

    Keys may be paths into nested dicts ("captions/text"); a list of captions gives
    its first.
    """

    def first(keys: tuple[str, ...]):
        for key in keys:
            value = fields
            for part in key.split("/"):
                value = value.get(part) if isinstance(value, dict) else None
            if value is not None:
                if isinstance(value, list | tuple) or (
                    isinstance(value, np.ndarray) and value.dtype == object and value.ndim == 1
                ):
                    return value[0] if len(value) else None
                return value
        return None

    key = fields.get("__key__", "")
    return {"image": first(image_keys), "text": first(text_keys), "key": str(key)}


def text_of(value) -> str | Skipped:
    """A caption as clean str, or why it is unusable."""
    if value is None:
        return Skipped("missing_text")
    if isinstance(value, np.ndarray) and value.ndim == 0:
        value = value.item()
    if isinstance(value, bytes | np.bytes_):
        try:
            value = bytes(value).decode("utf-8")
        except UnicodeDecodeError as e:
            return Skipped("bad_text", detail=str(e))
    text = str(value).strip()
    return text if text else Skipped("empty_text")


class Prepare:
    """Raw example -> {"image": uint8 [S, S, 3], "tokens": int32 [L]} or `Skipped`."""

    def __init__(self, tokenizer: Tokenizer, images: ImageTransform | None = None):
        self.tokenizer = tokenizer
        self.images = images  # None: images arrive decoded at the model's size

    def __call__(self, raw: dict | Skipped, rng: np.random.Generator) -> dict | Skipped:
        if isinstance(raw, Skipped):
            return raw
        key = str(raw.get("key", ""))
        text = text_of(raw.get("text"))
        if isinstance(text, Skipped):
            return dataclasses.replace(text, key=key)
        image = raw.get("image")
        if image is None or (isinstance(image, bytes) and not image):
            return Skipped("missing_image", key)
        if self.images is None:
            return {"image": image, "tokens": self.tokenizer(text)}
        try:
            pixels = self.images(image, rng)
        except Exception as e:
            logging.debug("Bad image in %s: %s", key, e)
            return Skipped("bad_image", key, f"{type(e).__name__}: {e}")
        return {"image": pixels, "tokens": self.tokenizer(text)}
