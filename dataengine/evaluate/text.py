"""Text: bytes per token of our tokenizer against a SentencePiece BPE of the same size.

``evaluate_text(tokenizer, fit_texts, eval_texts)`` trains SentencePiece BPE
(``model_type=bpe``) on ``fit_texts``, in memory, with the SAME vocabulary size
as ``tokenizer.vocab_size``, and reports UTF-8 bytes of ``eval_texts`` per token
for both. Two baselines are trained:

- ``baseline_*``: SentencePiece's default normaliser (``nmt_nfkc``, runs of
  whitespace and newlines collapsed to one space) with ``byte_fallback=True``,
  the usual way SentencePiece is run (the issue's "about 3.6 bytes/token on a
  licence text"). It is LOSSY on whitespace, so it gets whitespace for free that
  a lossless tokenizer pays for: the harder bar.
- ``baseline_lossless_*``: ``identity`` normaliser, whitespace kept, byte
  fallback: decodes back to the exact input, like ours.

Counting, the same on both sides: bytes are ``len(text.encode("utf-8"))`` of
the ORIGINAL eval texts; tokens are what each encoder emits for each text, with
no bos/eos. Specials: our `bpe` holds none (pad/bos/eos/markers live in the
shared vocabulary, outside ``tokenizer.vocab_size``), so its whole size is byte
symbols + merges. SentencePiece's size includes ``<unk>`` (id 0) and its 256
byte-fallback pieces ``<0x00>..<0xFF>``; ``<s>``, ``</s>`` and ``<pad>`` are turned
off, so 257 of its ids are not learnt pieces (ours: 256 byte symbols).
SentencePiece needs ``vocab_size >= 257 + kept characters``: on a corpus with
many distinct characters the character coverage is lowered to fit (not below
0.98, its floor for BPE; past that it is a ValueError). On a corpus
too small for the asked size SentencePiece stops early (``hard_vocab_limit``
off), like our trainer: ``baseline_vocab_size`` is the size it reached.

Training is deterministic: one thread, all sentences (no sampling), fixed order.
Each fit text is split into lines (SentencePiece trains on sentences).
"""
from __future__ import annotations

import io
import time
import unicodedata
from collections import Counter
from typing import Any

SP_META = 257  # <unk> + 256 byte-fallback pieces
MIN_COVERAGE = 0.98  # SentencePiece's BPE trainer refuses a lower character_coverage
LOSSY = {"normalization_rule_name": "nmt_nfkc", "remove_extra_whitespaces": True}
LOSSLESS = {"normalization_rule_name": "identity", "remove_extra_whitespaces": False}


def _lines(texts: list[str]) -> list[str]:
    return [line for t in texts for line in t.splitlines() if line.strip()]


def _coverage(lines: list[str], max_chars: int, nfkc: bool) -> float:
    """A character_coverage keeping at most ``max_chars`` distinct characters (SentencePiece's rule)."""
    counts = Counter(ch for line in lines for ch in (unicodedata.normalize("NFKC", line) if nfkc else line)
                     if not ch.isspace())
    if len(counts) <= max_chars:
        return 0.9995  # SentencePiece's default
    freq = sorted(counts.values(), reverse=True)
    return sum(freq[:max_chars]) / sum(freq) * (1 - 1e-6)


def train_sentencepiece(fit_texts: list[str], vocab_size: int, *, lossless: bool = False) -> Any:
    """A SentencePiece BPE processor of (at most) ``vocab_size`` pieces, trained in memory."""
    import sentencepiece as spm  # imported here: only evaluation needs it

    lines = _lines(fit_texts)
    if not lines:
        raise ValueError("evaluate_text: the fitting texts hold no non-blank line to train SentencePiece on")
    if vocab_size < SP_META + 2:
        raise ValueError(f"evaluate_text: vocab_size {vocab_size} is too small for a byte-fallback "
                         f"SentencePiece (needs > {SP_META} + characters)")
    settings = LOSSLESS if lossless else LOSSY
    max_chars = vocab_size - SP_META - 1
    for _ in range(6):  # lower the character coverage until the required characters fit
        model, coverage = io.BytesIO(), _coverage(lines, max_chars, nfkc=not lossless)
        if coverage < MIN_COVERAGE:
            raise ValueError(
                f"evaluate_text: a {vocab_size}-piece SentencePiece cannot hold the {SP_META} fallback "
                f"pieces plus the characters covering {MIN_COVERAGE:.0%} of the fitting text (its "
                f"lowest character_coverage); evaluate a larger vocabulary")
        try:
            spm.SentencePieceTrainer.train(
                sentence_iterator=iter(lines), model_writer=model, model_type="bpe",
                vocab_size=int(vocab_size), byte_fallback=True, hard_vocab_limit=False,
                character_coverage=coverage,
                bos_id=-1, eos_id=-1, pad_id=-1, unk_id=0, num_threads=1,
                input_sentence_size=0, shuffle_input_sentence=False,
                max_sentence_length=1 << 20, minloglevel=2, **settings,
            )
        except RuntimeError as e:
            if "required_chars" not in str(e) or max_chars <= 1:
                raise
            max_chars = max(1, max_chars - max(4, max_chars // 8))
            continue
        return spm.SentencePieceProcessor(model_proto=model.getvalue())
    raise RuntimeError("evaluate_text: SentencePiece could not fit the characters into the vocabulary")


def _bytes_per_token(encode, texts: list[str]) -> tuple[float, int, int]:
    n_bytes = sum(len(t.encode("utf-8")) for t in texts)
    n_tokens = sum(len(encode(t)) for t in texts)
    return n_bytes / max(1, n_tokens), n_bytes, n_tokens


def evaluate_text(tokenizer: Any, fit_texts: list[str], eval_texts: list[str], *,
                  lossless_baseline: bool = True) -> dict:
    """bytes/token of ``tokenizer`` and of SentencePiece BPE baselines of the same vocabulary size.

    Returns ``bytes_per_token``, ``baseline_bytes_per_token`` (SentencePiece defaults,
    lossy on whitespace), ``vocab_size``, ``baseline_vocab_size``, the byte and token
    counts, and with ``lossless_baseline`` the ``baseline_lossless_*`` pair.
    """
    eval_texts = [t for t in eval_texts if isinstance(t, str)]
    if not eval_texts:
        raise ValueError("evaluate_text: no eval texts")
    vocab = int(tokenizer.vocab_size)
    ours, n_bytes, n_tokens = _bytes_per_token(
        lambda t: tokenizer.encode(t)[0], eval_texts)
    out: dict[str, Any] = {"bytes_per_token": ours, "vocab_size": vocab, "eval_bytes": n_bytes,
                           "tokens": n_tokens, "eval_texts": len(eval_texts), "fit_texts": len(fit_texts)}
    variants = [("baseline", False)] + ([("baseline_lossless", True)] if lossless_baseline else [])
    for name, lossless in variants:
        t0 = time.perf_counter()
        sp = train_sentencepiece(list(fit_texts), vocab, lossless=lossless)
        seconds = time.perf_counter() - t0
        bpt, _, toks = _bytes_per_token(lambda t: sp.encode(t), eval_texts)
        out[f"{name}_bytes_per_token"] = bpt
        out[f"{name}_vocab_size"] = int(sp.get_piece_size())
        out[f"{name}_tokens"] = toks
        out[f"{name}_fit_seconds"] = round(seconds, 3)
    out["ratio_to_baseline"] = ours / out["baseline_bytes_per_token"]
    out["baseline"] = ("sentencepiece bpe, byte_fallback, same vocab_size; baseline: nmt_nfkc + whitespace "
                       "collapsed (lossy); baseline_lossless: identity, whitespace kept")
    return out
