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


# --- version 2: superword merges and the newline normaliser ------------------------------
PROSE = [
    "The owner of the work shall mean the person who holds the rights in the work. "
    "Each copy of the work must carry a notice of the terms, and the terms apply to each part of the work.\n"
    "The terms of the licence apply to the whole of the work and to each part of the work.",
    "A notice of the terms must be kept in each copy of the work; the owner of the work may change the terms.\n"
    "Nothing in the terms of the licence limits the rights of the owner of the work.",
] * 6


def test_superword_tokens_span_words_and_compress():
    """Merges across words ("Ġof Ġthe") beat a words-only BPE of the same size on the same text."""
    sup = BPETokenizer.fit(PROSE, {"vocab_size": 420}, seed=0, log=QUIET)
    words = BPETokenizer.fit(PROSE, {"vocab_size": 420, "word_fraction": 1.0}, seed=0, log=QUIET)
    assert sup.card()["version"] == "2" and sup.params["word_fraction"] == 0.9
    spanning = [t for t in sup.hf.get_vocab() if "Ġ" in t[1:] and t.strip("Ġ")]
    assert spanning, "no token spans two words"
    assert not [t for t in words.hf.get_vocab() if "Ġ" in t[1:] and t.strip("Ġ")]
    text = "The owner of the work may change the terms of the licence."
    assert len(sup.encode(text)[0]) < len(words.encode(text)[0])
    for tok in (sup, words):
        for s in PROSE[:2] + [text, "of the\n\nof the  \n of\tthe\r\n", "\n", "\n ", " \n", "x\n\n\n  y"]:
            assert tok.decode(*tok.encode(s)) == s


def test_first_word_of_a_line_uses_the_mid_line_token():
    """'\\n' is normalised to '\\n ' (and back), so "owner" after a newline is the token " owner"."""
    tok = BPETokenizer.fit(PROSE, {"vocab_size": 420, "word_fraction": 1.0}, seed=0, log=QUIET)
    mid, start = tok.encode("x owner")[0], tok.encode("x\nowner")[0]
    assert mid[-1] == start[-1] and tok.hf.id_to_token(int(mid[-1])) == "Ġowner"
    assert tok.decode(start) == "x\nowner" and tok.decode(tok.encode("x\n owner")[0]) == "x\n owner"


def test_superword_params_are_checked():
    with pytest.raises(RecipeError, match="word_fraction"):
        BPETokenizer.fit(["abc abc"], {"word_fraction": 0.0}, seed=0, log=QUIET)
    with pytest.raises(RecipeError, match="max_superword"):
        BPETokenizer.fit(["abc abc"], {"max_superword": 1}, seed=0, log=QUIET)


def test_loads_a_version_1_file(tmp_path):
    """A v1 tokenizer.json (GPT-2-regex byte-level BPE) still loads, round-trips and says version 1."""
    import yaml
    from tokenizers import Tokenizer as HFTokenizer
    from tokenizers import decoders, models, normalizers, pre_tokenizers, trainers

    from dataengine.tokenize.base import sha256_file

    hf = HFTokenizer(models.BPE())
    hf.normalizer = normalizers.NFC()
    hf.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
    hf.decoder = decoders.ByteLevel()
    hf.train_from_iterator(PROSE, trainer=trainers.BpeTrainer(
        vocab_size=300, show_progress=False, initial_alphabet=pre_tokenizers.ByteLevel.alphabet()))
    hf.save(str(tmp_path / "tokenizer.json"))
    card = {"family": "bpe", "modality": "text", "version": "1", "params": {"vocab_size": 300, "min_frequency": 2},
            "weights_sha256": sha256_file(tmp_path / "tokenizer.json"), "fitted_on": {}}
    (tmp_path / "card.yaml").write_text(yaml.safe_dump(card))
    tok = BPETokenizer.load(tmp_path)
    assert tok.card()["version"] == "1"
    s = "line one\nline two  é\n"
    assert tok.decode(*tok.encode(s)) == s
