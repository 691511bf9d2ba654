"""Text quality stats, after the Gopher rules (Rae et al. 2021, "Scaling Language Models:
Methods, Analysis & Insights from Training Gopher", appendix A.1.1), plus a language guess.

Words are whitespace-separated tokens. The Gopher quality filter keeps documents
with 50..100,000 words, a mean word length of 3..10, a symbol-to-word ratio
(``#`` or ``...``) of at most 0.1 and at least 80% of words holding an alphabetic
character. Its repetition filter drops documents whose duplicate lines exceed
30% of lines or 20% of characters, whose most frequent 2/3/4-gram covers more
than 20/18/16% of characters, or whose duplicated 5..10-grams cover more than
15..10% of characters. We store the values; thresholds live in the recipe.
Of the 5..10-gram family we keep its two ends, n=5 (`text_dup_ngram_ratio`)
and n=10; the rules in between interpolate linearly between them.

The language guess is py3langid (its naive Bayes model ships inside the
package as numpy arrays; no download, no pickle), on the first
`LANG_MAX_CHARS` characters.
"""
from __future__ import annotations

import functools

import numpy as np
import polars as pl

LANG_MAX_CHARS = 2_000  # the language guess reads this much: plenty, and its DFA walk loops per byte


@functools.lru_cache(maxsize=1)
def _identifier():
    from py3langid.langid import MODEL_FILE, LanguageIdentifier  # noqa: PLC0415

    return LanguageIdentifier.from_model_file(MODEL_FILE, norm_probs=True)


def guess_language(text: str) -> tuple[str, float]:
    """(ISO 639 code, probability 0..1) of the first LANG_MAX_CHARS characters."""
    lang, score = _identifier().classify(text[:LANG_MAX_CHARS])
    return str(lang), float(score)


_MIX = np.uint64(0x9E3779B97F4A7C15)  # 64-bit golden-ratio constant: n-gram keys mix word ids with it


def _word_keys(word_ids: np.ndarray) -> np.ndarray:
    """uint64 [W]: a well-spread key per word id (splitmix64 finaliser), so n-gram keys rarely collide."""
    z = word_ids.astype(np.uint64) + _MIX
    with np.errstate(over="ignore"):
        z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
        z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
    return z ^ (z >> np.uint64(31))


def ngram_keys(word_ids: np.ndarray, n: int) -> np.ndarray:
    """uint64 [W - n + 1]: a 64-bit key per word n-gram (equal n-grams, equal keys; a collision
    between different n-grams has probability ~ W^2 / 2^64)."""
    k = _word_keys(word_ids)
    count = len(k) - n + 1
    if count <= 0:
        return np.zeros(0, np.uint64)
    h = k[:count].copy()
    with np.errstate(over="ignore"):
        for j in range(1, n):  # a loop over the n-gram order, vectorised over positions
            h = h * _MIX + k[j: j + count]
    return h


def _cover(starts: np.ndarray, n: int, length: int) -> np.ndarray:
    """bool [length]: positions inside any window [s, s + n) for s in `starts` (overlaps count once)."""
    delta = np.bincount(starts, minlength=length + 1) - np.bincount(starts + n, minlength=length + n + 1)[:length + 1]
    return np.cumsum(delta[:length]) > 0


def ngram_ratios(word_ids: np.ndarray, word_len: np.ndarray, n: int) -> tuple[float, float]:
    """(top n-gram char fraction, duplicate n-gram char fraction) of one document.

    top: characters covered by the most frequent n-gram (if it occurs at least twice; of equally
    frequent ones, the one that occurs first); duplicate: characters covered by n-gram occurrences
    that repeat an earlier one. Both count a character once however many windows overlap it, and
    are fractions of the document's word characters.
    """
    total = float(word_len.sum())
    keys = ngram_keys(np.asarray(word_ids), n)
    if len(keys) == 0 or total == 0:
        return 0.0, 0.0
    order = np.argsort(keys, kind="stable")  # equal keys stay in position order
    sorted_keys = keys[order]
    new = np.ones(len(keys), bool)
    new[1:] = sorted_keys[1:] != sorted_keys[:-1]
    dup = np.empty(len(keys), bool)
    dup[order] = ~new  # every occurrence after the first of its n-gram
    length = len(word_ids)
    dup_frac = float(word_len[_cover(np.flatnonzero(dup), n, length)].sum()) / total
    starts = np.flatnonzero(new)
    counts = np.diff(np.append(starts, len(keys)))
    best = np.flatnonzero(counts == counts.max())
    top = best[np.argmin(order[starts[best]])]  # ties: the n-gram that occurs first
    top_frac = 0.0
    if counts[top] > 1:
        where = order[starts[top]: starts[top] + counts[top]]
        top_frac = float(word_len[_cover(where, n, length)].sum()) / total
    return top_frac, dup_frac


def text_stats(text: str, *, language: bool = True) -> dict:
    """Size, Gopher quality and repetition ratios, and a language guess of one document.

    `language=False` skips the language guess (no `text_lang` / `text_lang_score`).
    """
    words = text.split()
    out: dict = {"text_chars": float(len(text)), "text_words": float(len(words))}
    lines = [ln.strip() for ln in text.split("\n")]
    lines = [ln for ln in lines if ln]
    if lines:
        dup_lines = pl.Series(lines, dtype=pl.String).is_first_distinct().not_().to_numpy()
        line_len = np.fromiter(map(len, lines), np.int64, len(lines))
        out["text_dup_line_ratio"] = float(dup_lines.mean())
        out["text_dup_line_char_ratio"] = float(line_len[dup_lines].sum() / max(1, line_len.sum()))
    if words:
        n_words = len(words)
        series = pl.Series(words, dtype=pl.String)
        word_len = series.str.len_chars().to_numpy().astype(np.int64)
        out["text_mean_word_len"] = float(word_len.mean())
        hashes, ellipses = text.count("#"), text.count("...") + text.count("\u2026")
        out["text_symbol_ratio"] = max(hashes, ellipses) / n_words  # Gopher: either symbol, per word
        out["text_non_alpha_ratio"] = float((~series.str.contains(r"\p{L}")).sum()) / n_words
        word_ids = series.rank("dense").to_numpy()  # equal words, equal ids
        for n in (2, 3, 4):
            out[f"text_top_{n}gram_ratio"] = ngram_ratios(word_ids, word_len, n)[0]
        out["text_dup_ngram_ratio"] = ngram_ratios(word_ids, word_len, 5)[1]
        out["text_dup_10gram_ratio"] = ngram_ratios(word_ids, word_len, 10)[1]
    if language and text.strip():
        out["text_lang"], out["text_lang_score"] = guess_language(text)
    return out
