"""Tokenizers: CLIP BPE against ids stored from open_clip, bytes, SentencePiece."""

import json
import pathlib

import ml_collections
import numpy as np
import pytest

from mmjax.data import clip_bpe, tokenizers

FIXTURE = pathlib.Path(__file__).parent / "fixtures" / "clip_bpe_captions.json"
CLIP_TEXT = ml_collections.ConfigDict(dict(vocab_size=49408, context_length=77))
# Captions that only ftfy rewrites (mojibake, curly quotes, control characters, full-width
# letters, ligatures): without ftfy these tokenize differently (docs/data.md).
NEEDS_FTFY = {
    "cafÃ© mojibake",
    "Thatâ€™s what she said",
    "“curly quotes” and ‘single’ ones",
    "control\x07bell\x1bescape",
    "ＦＵＬＬ ＷＩＤＴＨ ｌｅｔｔｅｒｓ",
    "ﬁ ligature ﬂ",
}


def _cases() -> list[dict]:
    return json.loads(FIXTURE.read_text())["cases"]


@pytest.fixture(scope="module")
def clip() -> clip_bpe.ClipBpeTokenizer:
    return tokenizers.build_tokenizer("clip_bpe", CLIP_TEXT)


def _expected(ids: list[int]) -> np.ndarray:
    out = np.zeros(77, np.int32)
    out[: len(ids)] = ids
    return out


def test_fixture_covers_the_tricky_cases():
    texts = [c["text"] for c in _cases()]
    assert len(texts) >= 200
    assert "" in texts and any(t and not t.strip() for t in texts)  # empty, whitespace only
    assert any("&amp;" in t for t in texts) and any("https://" in t for t in texts)
    assert any(ord(ch) > 0x1F000 for t in texts for ch in t)  # emoji
    assert any(len(c["ids"]) == 77 for c in _cases())  # truncated at the context length


def test_clip_bpe_equals_open_clip_on_every_fixture_caption(clip):
    pytest.importorskip("ftfy")
    mismatches = [
        c["text"] for c in _cases() if not np.array_equal(clip(c["text"]), _expected(c["ids"]))
    ]
    assert not mismatches, mismatches[:5]


def test_without_ftfy_only_the_documented_captions_differ(monkeypatch):
    monkeypatch.setattr(clip_bpe, "ftfy", None)
    tok = clip_bpe.ClipBpeTokenizer(77)
    differ = {
        c["text"] for c in _cases() if not np.array_equal(tok(c["text"]), _expected(c["ids"]))
    }
    assert differ == NEEDS_FTFY


def test_clip_bpe_layout_and_truncation(clip):
    ids = clip("a photo of a cat")
    assert ids.dtype == np.int32 and ids.shape == (77,)
    assert ids[0] == 49406 and ids.argmax() == 6 and ids[6] == 49407 and not ids[7:].any()
    long = clip("cat " * 200)
    assert long[-1] == 49407 and (long[1:-1] == long[1]).all()  # end token kept
    assert list(clip("")[:3]) == [49406, 49407, 0]
    short = clip_bpe.ClipBpeTokenizer(context_length=8)("a photo of a cat on a mat")
    assert short.shape == (8,) and short[-1] == 49407
    with pytest.raises(ValueError, match="vocab_size >= 49408"):
        tokenizers.build_tokenizer(
            "clip_bpe", ml_collections.ConfigDict(dict(vocab_size=1000, context_length=77))
        )


def test_bytes_tokenizer():
    text = ml_collections.ConfigDict(dict(vocab_size=259, context_length=8))
    tok = tokenizers.build_tokenizer("bytes", text)
    np.testing.assert_array_equal(tok("hé"), [257, 105, 196, 170, 258, 0, 0, 0])
    assert tok("x" * 50)[-1] == 258 and tok("x" * 50).argmax() == 7
    with pytest.raises(ValueError, match="vocab_size >= 259"):
        tokenizers.build_tokenizer(
            "bytes", ml_collections.ConfigDict(dict(vocab_size=100, context_length=8))
        )


def test_sentencepiece_tokenizer(tmp_path):
    spm = pytest.importorskip("sentencepiece")
    corpus = [f"a {c} {s} in the corner" for c in ("red", "blue", "green") for s in ("cat", "dog")]
    model = tmp_path / "m.model"
    spm.SentencePieceTrainer.train(
        sentence_iterator=iter(corpus * 20),
        model_prefix=str(tmp_path / "m"),
        vocab_size=20,
        minloglevel=2,
    )
    reference = spm.SentencePieceProcessor(model_file=str(model))
    n = reference.get_piece_size()
    text = ml_collections.ConfigDict(dict(vocab_size=n + 3, context_length=16))
    tok = tokenizers.build_tokenizer("sentencepiece", text, str(model))
    pieces = reference.encode("a red dog")
    want = [n + 1, *(p + 1 for p in pieces), n + 2]
    np.testing.assert_array_equal(tok("a red dog")[: len(want)], want)
    assert tok("a red dog").argmax() == len(want) - 1
    with pytest.raises(ValueError, match="tokenizer_model"):
        tokenizers.build_tokenizer("sentencepiece", text, "")
