"""Tokenizers, selected by `config.data.tokenizer`.

A tokenizer maps a string to a fixed-length int32 array of ids: start token, text, end
token, padding (id 0), truncated to the context length keeping the end token. The end
token has the largest id, so CLIP's argmax pooling finds it.
"""

import re
import zlib
from typing import Protocol

import ml_collections
import numpy as np

from mmjax.registry import Registry

TOKENIZERS = Registry("tokenizer")
PAD_ID = 0


class Tokenizer(Protocol):
    vocab_size: int
    context_length: int

    def __call__(self, text: str) -> np.ndarray: ...


def pack(ids: list[int], bos: int, eot: int, context_length: int) -> np.ndarray:
    """[bos] + ids + [eot], truncated keeping eot, padded with PAD_ID."""
    ids = [bos, *ids[: context_length - 2], eot]
    out = np.full(context_length, PAD_ID, np.int32)
    out[: len(ids)] = ids
    return out


class SimpleTokenizer:
    """Deterministic word tokenizer: lower-cased words and punctuation, hashed to ids.

    No vocabulary file and no training: a word's id is crc32(word) mod the vocabulary,
    the same in every process. Collisions are possible in a small vocabulary; the CLIP
    BPE tokenizer is the one for real data.
    """

    _WORDS = re.compile(r"[a-z0-9]+|[^\sa-z0-9]")

    def __init__(self, vocab_size: int, context_length: int):
        if vocab_size < 8:
            raise ValueError(f"vocab_size {vocab_size} is too small for the simple tokenizer.")
        self.vocab_size = vocab_size
        self.context_length = context_length
        self.bos, self.eot = vocab_size - 2, vocab_size - 1

    def word_id(self, word: str) -> int:
        return 1 + zlib.crc32(word.encode("utf-8")) % (self.vocab_size - 3)

    def __call__(self, text: str) -> np.ndarray:
        words = self._WORDS.findall(text.lower())
        return pack([self.word_id(w) for w in words], self.bos, self.eot, self.context_length)


@TOKENIZERS.register("simple")
def simple(text_config: ml_collections.ConfigDict) -> SimpleTokenizer:
    return SimpleTokenizer(text_config.vocab_size, text_config.context_length)


def build_tokenizer(name: str, text_config: ml_collections.ConfigDict) -> Tokenizer:
    """The tokenizer `name`, sized by the text tower's vocabulary and context."""
    return TOKENIZERS.get(name)(text_config)
