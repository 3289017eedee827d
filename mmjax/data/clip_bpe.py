"""CLIP's byte-level BPE tokenizer (Radford et al. 2021): ids equal open_clip's `tokenize`.

The vocabulary is the standard `bpe_simple_vocab_16e6.txt.gz` (48,894 merges), shipped
beside this file. Ids: the 256 byte symbols, the same with the end-of-word mark `</w>`,
one per merge in rank order, then <start_of_text> (49406) and <end_of_text> (49407): the
end token has the largest id, as CLIP's argmax pooling needs.

Text is cleaned as open_clip cleans it: `ftfy.fix_text` (when ftfy is installed), HTML
entities unescaped twice, whitespace runs collapsed, lower-cased. Without ftfy the text
is only NFC-normalised, so mojibake ("cafÃ©"), curly quotes and a few other characters
that ftfy rewrites tokenize differently (docs/data.md lists the differences measured on
tests/fixtures/clip_bpe_captions.json). Like open_clip, a literal "<end_of_text>" in a
caption is the special token.
"""

import functools
import gzip
import html
import itertools
import pathlib
import unicodedata

import numpy as np

from mmjax.data.tokenizers import pack

try:
    import ftfy
except ImportError:  # optional: see the module docstring
    ftfy = None

VOCAB = pathlib.Path(__file__).with_name("bpe_simple_vocab_16e6.txt.gz")
NUM_MERGES = 49152 - 256 - 2
SPECIALS = ("<start_of_text>", "<end_of_text>")
VOCAB_SIZE = 512 + NUM_MERGES + len(SPECIALS)  # 49408
_PATTERN = "|".join(SPECIALS) + r"""|'s|'t|'re|'ve|'m|'ll|'d|[\p{L}]+|[\p{N}]|[^\s\p{L}\p{N}]+"""


def byte_symbols() -> list[tuple[int, str]]:
    """(byte, printable symbol) in vocabulary order.

    Printable Latin-1 bytes stand for themselves and come first; the other 68 bytes
    (controls, space, soft hyphen, ...) get the characters from U+0100 on, in byte order.
    """
    printable = [
        *range(ord("!"), ord("~") + 1),
        *range(ord("¡"), ord("¬") + 1),
        *range(ord("®"), ord("ÿ") + 1),
    ]
    others = [b for b in range(256) if b not in set(printable)]
    return [(b, chr(b)) for b in printable] + [(b, chr(256 + i)) for i, b in enumerate(others)]


def clean(text: str) -> str:
    """open_clip's "lower" cleaning: fix_text, unescape twice, collapse whitespace, lower."""
    text = ftfy.fix_text(text) if ftfy is not None else unicodedata.normalize("NFC", text)
    text = html.unescape(html.unescape(text))
    return " ".join(text.split()).lower()


class ClipBpeTokenizer:
    """str -> int32 [context_length]: start, BPE ids, end (kept on truncation), zeros."""

    def __init__(self, context_length: int = 77, vocab_file: pathlib.Path = VOCAB):
        import regex  # \p{L} / \p{N} classes, which `re` lacks

        self.context_length = context_length
        self.vocab_size = VOCAB_SIZE
        with gzip.open(vocab_file, "rt", encoding="utf-8") as f:
            merges = [tuple(line.split()) for line in f.read().split("\n")[1 : NUM_MERGES + 1]]
        symbols = byte_symbols()
        self._byte_symbol = [""] * 256
        for b, s in symbols:
            self._byte_symbol[b] = s
        vocab = [s for _, s in symbols] + [s + "</w>" for _, s in symbols]
        vocab += ["".join(m) for m in merges] + list(SPECIALS)
        self._ids = {token: i for i, token in enumerate(vocab)}
        self._ranks = {m: i for i, m in enumerate(merges)}
        self.bos, self.eot = self._ids[SPECIALS[0]], self._ids[SPECIALS[1]]
        self._pattern = regex.compile(_PATTERN, regex.IGNORECASE)

    def _merge(self, word: list[str]) -> list[str]:
        """Applies merges, lowest rank first, each to every non-overlapping pair in turn."""
        while len(word) > 1:
            pairs = itertools.pairwise(word)
            best = min(pairs, key=lambda p: self._ranks.get(p, NUM_MERGES))
            if best not in self._ranks:
                break
            merged, i = [], 0
            while i < len(word):
                if i + 1 < len(word) and (word[i], word[i + 1]) == best:
                    merged.append(word[i] + word[i + 1])
                    i += 2
                else:
                    merged.append(word[i])
                    i += 1
            word = merged
        return word

    @functools.lru_cache(maxsize=1 << 16)  # noqa: B019 -- one tokenizer per run; words repeat
    def _word_ids(self, word: str) -> tuple[int, ...]:
        if word in SPECIALS:
            return (self._ids[word],)
        symbols = "".join(self._byte_symbol[b] for b in word.encode("utf-8"))
        parts = self._merge([*symbols[:-1], symbols[-1] + "</w>"])
        return tuple(self._ids[p] for p in parts)

    def encode(self, text: str) -> list[int]:
        """BPE ids of the cleaned text, without start and end tokens."""
        return [i for w in self._pattern.findall(clean(text)) for i in self._word_ids(w)]

    ids = encode  # the Tokenizer protocol's name

    def __call__(self, text: str) -> np.ndarray:
        return pack(self.encode(text), self.bos, self.eot, self.context_length)
