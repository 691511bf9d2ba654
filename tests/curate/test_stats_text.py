"""Text quality stats (Gopher rules, Rae et al. 2021) and the language guess."""
from __future__ import annotations

import numpy as np
import pytest
from pydoc_data.topics import topics

from dataengine.curate.stats_text import ngram_ratios, text_stats

ENGLISH = topics["while"][:1500]  # real English prose from Python's own docs
GERMAN = ("Die Würde des Menschen ist unantastbar. Sie zu achten und zu schützen ist Verpflichtung aller "
          "staatlichen Gewalt. Das Deutsche Volk bekennt sich darum zu unverletzlichen und unveräußerlichen "
          "Menschenrechten als Grundlage jeder menschlichen Gemeinschaft, des Friedens und der Gerechtigkeit "
          "in der Welt.")  # Grundgesetz, Art. 1


def test_language_guess() -> None:
    en, de = text_stats(ENGLISH), text_stats(GERMAN)
    assert en["text_lang"] == "en" and en["text_lang_score"] > 0.9
    assert de["text_lang"] == "de" and de["text_lang_score"] > 0.9
    assert "text_lang" not in text_stats("   \n ")
    assert "text_lang" not in text_stats(ENGLISH, language=False)


def test_counts_and_word_ratios() -> None:
    text = "one two three\nfour 55 #tag ..."
    s = text_stats(text, language=False)
    assert (s["text_chars"], s["text_words"]) == (len(text), 7.0)
    assert s["text_mean_word_len"] == pytest.approx(len("onetwothreefour55#tag...") / 7)
    assert s["text_non_alpha_ratio"] == pytest.approx(2 / 7)  # "55" and "..."
    assert s["text_symbol_ratio"] == pytest.approx(1 / 7)     # one '#' and one ellipsis: max of the two
    many = text_stats("#a #b #c #d word", language=False)
    assert many["text_symbol_ratio"] == pytest.approx(4 / 5)
    assert text_stats("Grüße aus Köln", language=False)["text_non_alpha_ratio"] == 0.0  # non-ASCII letters count


def test_repeated_lines_raise_dup_ratios() -> None:
    base = text_stats(ENGLISH, language=False)
    lines = ENGLISH.split("\n")
    repeated = "\n".join(lines + lines[:6] + lines[:6])
    rep = text_stats(repeated, language=False)
    for key in ("text_dup_line_ratio", "text_dup_line_char_ratio", "text_dup_ngram_ratio", "text_dup_10gram_ratio"):
        assert rep[key] > base[key] + 0.05, key
    exact = text_stats("a\nb\na\n\n  a  \nc", language=False)  # blank lines ignored; lines compared stripped
    assert exact["text_dup_line_ratio"] == pytest.approx(2 / 5)
    assert exact["text_dup_line_char_ratio"] == pytest.approx(2 / 5)


def test_doubled_document_is_half_duplicate() -> None:
    words = [f"w{i}" for i in range(40)]
    s = text_stats(" ".join(words + words), language=False)
    assert s["text_dup_ngram_ratio"] == pytest.approx(0.5)
    assert s["text_dup_10gram_ratio"] == pytest.approx(0.5)
    # every 2-gram but the seam occurs twice; the tie goes to the one that occurs first, "w0 w1":
    # 2 x 4 characters of 2 x (10 x 2 + 30 x 3) = 220
    assert s["text_top_2gram_ratio"] == pytest.approx(8 / 220)


def test_top_ngram_covers_repeats_once() -> None:
    s = text_stats("the cat the cat the cat", language=False)
    assert s["text_top_2gram_ratio"] == pytest.approx(1.0)
    # "the cat the" and "cat the cat" both occur twice; the tie goes to "the cat the" (it occurs
    # first), which covers all but the last "cat": 15 of 18 characters
    assert s["text_top_3gram_ratio"] == pytest.approx(15 / 18)
    unique = text_stats("alpha beta gamma delta epsilon zeta", language=False)
    assert unique["text_top_2gram_ratio"] == 0.0 and unique["text_dup_ngram_ratio"] == 0.0


def _naive(words: list[str], n: int) -> tuple[float, float]:
    """The definitions, one loop per window: the reference for the vectorised version."""
    total = sum(map(len, words))
    grams = [tuple(words[i:i + n]) for i in range(len(words) - n + 1)]
    seen, dup_pos = set(), set()
    for i, g in enumerate(grams):
        if g in seen:
            dup_pos.update(range(i, i + n))
        seen.add(g)
    counts = {g: grams.count(g) for g in grams}
    top_frac = 0.0
    if counts and max(counts.values()) > 1:
        best = max(counts.values())
        top = next(g for g in grams if counts[g] == best)  # ties: the n-gram that occurs first
        pos = {p for i, g in enumerate(grams) if g == top for p in range(i, i + n)}
        top_frac = sum(len(words[p]) for p in pos) / total
    return top_frac, sum(len(words[p]) for p in dup_pos) / total


def test_ngram_ratios_match_the_definition() -> None:
    rng = np.random.default_rng(0)
    vocab = np.array(["a", "bb", "ccc", "dddd"])
    for _ in range(30):
        words = list(vocab[rng.integers(0, 4, rng.integers(1, 40))])
        uniq = sorted(set(words))
        ids = np.array([uniq.index(w) for w in words])
        lens = np.array([len(w) for w in words])
        for n in (2, 3, 5):
            assert ngram_ratios(ids, lens, n) == pytest.approx(_naive(words, n)), (words, n)


def test_empty_and_tiny_texts() -> None:
    assert text_stats("", language=False) == {"text_chars": 0.0, "text_words": 0.0}
    s = text_stats("word", language=False)
    assert s["text_words"] == 1 and s["text_dup_ngram_ratio"] == 0.0 and s["text_dup_line_ratio"] == 0.0
