"""Byte-level BPE: exact round trip on arbitrary Unicode, real vocabulary size, determinism."""
from __future__ import annotations

import random
import unicodedata

import numpy as np
import pytest

from dataengine.errors import RecipeError, RejectError
from dataengine.tokenize.text_bpe import BPETokenizer

QUIET = lambda *_: None  # noqa: E731


def random_unicode(rng: random.Random, n: int) -> str:
    """Code points from every plane band (no surrogates): ASCII, controls, CJK, emoji, astral."""
    bands = [(0x00, 0x7F), (0x80, 0x7FF), (0x800, 0xD7FF), (0xE000, 0xFFFD),
             (0x10000, 0x10FFFF), (0x1F300, 0x1FAFF), (0x0300, 0x036F)]
    return "".join(chr(rng.randint(*rng.choice(bands))) for _ in range(n))


def test_round_trip_arbitrary_unicode(bpe):
    rng = random.Random(0)
    cases = ["", " ", "  leading and  double  spaces\t\n\r\n", "\x00\x01\x7f nul and controls",
             "e\u0301 (decomposed) vs \u00e9", "עברית العربية हिन्दी ไทย 한국어", "🏳️‍🌈👩‍👩‍👧", "\ufeffbom",
             "\u200b\u200d zero-width", "𝔘𝔫𝔦𝔠𝔬𝔡𝔢 𐍈"] + [random_unicode(rng, 200) for _ in range(20)]
    for s in cases:
        codes, side = bpe.encode(s)
        assert codes.dtype == np.int32 and side == {}
        assert (codes >= 0).all() and (codes < bpe.vocab_size).all()
        # exact, up to the NFC normaliser
        assert bpe.decode(codes, side) == unicodedata.normalize("NFC", s)
    nfc = unicodedata.normalize("NFC", random_unicode(rng, 500))
    assert bpe.decode(*bpe.encode(nfc)) == nfc


def test_batch_round_trip(bpe):
    texts = ["a", "héllo wörld", "🎉" * 5]
    for s, (codes, side) in zip(texts, bpe.encode_batch(texts)):
        assert bpe.decode(codes, side) == s


def test_small_corpus_reports_real_vocab_size():
    tok = BPETokenizer.fit(["aa bb aa bb"], {"vocab_size": 4096}, seed=0, log=QUIET)
    assert tok.params["vocab_size"] == 4096
    assert 256 <= tok.vocab_size < 4096
    assert tok.level_sizes() == [tok.vocab_size] == [tok.hf.get_vocab_size()]
    assert tok.card()["vocab_size"] == tok.vocab_size


def test_merges_compress(bpe):
    text = "The quick brown fox jumps over the lazy dog."
    assert len(bpe.encode(text)[0]) < len(text.encode("utf-8")) / 2
    assert bpe.vocab_size == 400
    assert 0 < bpe.card()["tokens_per_unit"]["tokens_per_byte"] < 1


def test_fit_is_deterministic(bpe, texts):
    again = BPETokenizer.fit(texts, {"vocab_size": 400}, seed=0, log=QUIET)
    assert again.weights_sha256() == bpe.weights_sha256()
    assert again.weights_bytes() == bpe.weights_bytes()


def test_saves_tokenizer_json(bpe, tmp_path):
    bpe.save(tmp_path)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["card.yaml", "tokenizer.json"]


def test_bad_params_and_inputs():
    with pytest.raises(RecipeError, match="256"):
        BPETokenizer.fit(["abc abc"], {"vocab_size": 100}, seed=0, log=QUIET)
    with pytest.raises(RecipeError, match="no non-empty text"):
        BPETokenizer.fit(["", ""], {}, seed=0, log=QUIET)
    with pytest.raises(RecipeError, match="min_frequency"):
        BPETokenizer.fit(["abc"], {"min_freq": 1}, seed=0, log=QUIET)
    tok = BPETokenizer.fit(["abc abc"], {}, seed=0, log=QUIET)
    with pytest.raises(RejectError):
        tok.encode(b"bytes")
