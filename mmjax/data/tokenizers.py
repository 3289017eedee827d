"""Tokenizers, selected by `config.data.tokenizer`.

A tokenizer maps a string to a fixed-length int32 array of ids: start token, text, end
token, padding (id 0), truncated to the context length keeping the end token. The end
token has the largest id, so CLIP's argmax pooling finds it. `ids(text)` gives the text's
ids before packing, so a reader can tell a caption that does not fit (`fits`).
"""

import re
import zlib
from typing import Protocol

import ml_collections
import numpy as np

from mmjax.errors import MissingPackageError
from mmjax.registry import Registry

TOKENIZERS = Registry("tokenizer")
PAD_ID = 0


class Tokenizer(Protocol):
    vocab_size: int
    context_length: int

    def ids(self, text: str) -> list[int]: ...  # the text's ids, unpacked

    def __call__(self, text: str) -> np.ndarray: ...


def fits(tokenizer: Tokenizer, ids: list[int]) -> bool:
    """Whether `ids` fit the context with the start and end tokens, uncut."""
    return len(ids) <= tokenizer.context_length - 2


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

    def ids(self, text: str) -> list[int]:
        return [self.word_id(w) for w in self._WORDS.findall(text.lower())]

    def __call__(self, text: str) -> np.ndarray:
        return pack(self.ids(text), self.bos, self.eot, self.context_length)


def _fits(name: str, needed: int, text_config: ml_collections.ConfigDict) -> None:
    if text_config.vocab_size < needed:
        raise ValueError(
            f"tokenizer {name!r} needs the text tower's vocab_size >= {needed},"
            f" got {text_config.vocab_size} (config.model.towers.<text modality>.vocab_size)."
        )


class BytesTokenizer:
    """UTF-8 bytes as ids 1..256: no vocabulary, nothing unknown, any language."""

    def __init__(self, context_length: int):
        self.context_length = context_length
        self.vocab_size = 259
        self.bos, self.eot = 257, 258

    def ids(self, text: str) -> list[int]:
        return (np.frombuffer(text.encode("utf-8"), np.uint8).astype(np.int32) + 1).tolist()

    def __call__(self, text: str) -> np.ndarray:
        return pack(self.ids(text), self.bos, self.eot, self.context_length)


class SentencePieceTokenizer:
    """A SentencePiece model's pieces, shifted by one so that 0 stays padding.

    Ids: piece i -> i + 1; start n + 1 and end n + 2 for a model of n pieces, so the end
    token has the largest id (argmax pooling). The model's own bos/eos are not added.
    """

    def __init__(self, model_path: str, context_length: int):
        if not model_path:
            raise ValueError("The sentencepiece tokenizer needs config.data.tokenizer_model.")
        try:
            import sentencepiece
        except ImportError as e:
            raise MissingPackageError(
                "pip install sentencepiece to use a SentencePiece model."
            ) from e
        from mmjax.data.paths import open_file

        with open_file(model_path) as f:
            self._model = sentencepiece.SentencePieceProcessor(model_proto=f.read())
        n = self._model.get_piece_size()
        self.context_length = context_length
        self.vocab_size = n + 3
        self.bos, self.eot = n + 1, n + 2

    def ids(self, text: str) -> list[int]:
        return [i + 1 for i in self._model.encode(text)]

    def __call__(self, text: str) -> np.ndarray:
        return pack(self.ids(text), self.bos, self.eot, self.context_length)


@TOKENIZERS.register("simple")
def simple(text_config: ml_collections.ConfigDict, model_path: str = "") -> SimpleTokenizer:
    return SimpleTokenizer(text_config.vocab_size, text_config.context_length)


@TOKENIZERS.register("bytes")
def bytes_(text_config: ml_collections.ConfigDict, model_path: str = "") -> BytesTokenizer:
    tokenizer = BytesTokenizer(text_config.context_length)
    _fits("bytes", tokenizer.vocab_size, text_config)
    return tokenizer


@TOKENIZERS.register("clip_bpe")
def clip_bpe(text_config: ml_collections.ConfigDict, model_path: str = "") -> Tokenizer:
    from mmjax.data.clip_bpe import ClipBpeTokenizer  # imports this module: import late

    tokenizer = ClipBpeTokenizer(text_config.context_length)
    _fits("clip_bpe", tokenizer.vocab_size, text_config)
    return tokenizer


@TOKENIZERS.register("sentencepiece")
def sentencepiece_(text_config: ml_collections.ConfigDict, model_path: str = "") -> Tokenizer:
    tokenizer = SentencePieceTokenizer(model_path, text_config.context_length)
    _fits("sentencepiece", tokenizer.vocab_size, text_config)
    return tokenizer


def build_tokenizer(
    name: str, text_config: ml_collections.ConfigDict, model_path: str = ""
) -> Tokenizer:
    """The tokenizer `name`, sized by the text tower's vocabulary and context.

    `model_path`: the model file of tokenizers that need one (config.data.tokenizer_model).
    """
    return TOKENIZERS.get(name)(text_config, model_path)
