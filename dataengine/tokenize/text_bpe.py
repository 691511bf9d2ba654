"""`bpe`: byte-level BPE over text with superword merges, trained with Hugging Face `tokenizers`.

Version 2 trains in two stages (SuperBPE, Liu et al. 2025):

1. word stage: merges inside words only (a word is an optional leading space
   plus a run of letters, of digits, or of other symbols; whitespace runs are
   words of their own), until ``word_fraction * vocab_size`` or until no pair is
   seen ``min_frequency`` times;
2. superword stage: the rest of the vocabulary from merges ACROSS words inside
   a line ("of the", ", and", " shall mean"), at most ``max_superword`` word-stage
   tokens long. Training sees the word-stage segmentation of each line, spelled
   one character per word-stage token.

Both merge lists live in ONE Hugging Face ``tokenizer.json``: the pre-tokenizer
cuts lines/whitespace runs, and the word-stage merges come first in rank, so
they never cross a word boundary (no word-stage token spans two words), so
encoding equals "word stage, then superword stage" exactly.

Normaliser: NFC, then every ``\\n`` becomes ``\\n `` so that the first word of a
line has the same space-prefixed token as inside a line; the decoder (byte
level, then ``\\n `` -> ``\\n``) removes exactly those spaces. So any Unicode
string round-trips exactly up to NFC: ``decode(encode(s)) == NFC(s)``. The 256
byte symbols are always in the vocabulary, so nothing is ever unknown. No
special tokens live here: pad/bos/eos/markers belong to the shared vocabulary.

Version 1 files (plain GPT-2-regex byte-level BPE) still load and round-trip.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Callable, ClassVar

import numpy as np
from tokenizers import Regex
from tokenizers import Tokenizer as HFTokenizer
from tokenizers import decoders, models, normalizers, pre_tokenizers, trainers

from dataengine.errors import RecipeError, RejectError
from dataengine.tokenize.base import Tokenizer, resolve_params

TOKENIZER_FILE = "tokenizer.json"
# a word: optional leading space + letters | digits | other symbols; whitespace runs keep
# their last space for the next word (GPT-2's rule, without its English contractions)
WORD_SPLIT = r" ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+"
# a superword span: words joined by single spaces (one line, no runs of whitespace)
LINE_SPLIT = r" ?\S+(?: \S+)*|\s+(?!\S)|\s+"
CHAR_BASE = 0x10000  # word-stage token id i is spelled chr(CHAR_BASE + i) in the superword stage


def _normalizer() -> normalizers.Normalizer:
    """NFC, then "\n" -> "\n " (the decoder takes exactly those spaces out again)."""
    return normalizers.Sequence([normalizers.NFC(), normalizers.Replace("\n", "\n ")])


def _pipeline(split: str, model: models.Model | None = None, *, normalize: bool = True) -> HFTokenizer:
    """normaliser -> Split(regex) -> byte-level symbols -> BPE -> byte-level decoder."""
    tok = HFTokenizer(model or models.BPE())
    if normalize:
        tok.normalizer = _normalizer()
    tok.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.Split(Regex(split), behavior="isolated"),
        pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
    ])
    tok.decoder = decoders.Sequence([decoders.ByteLevel(), decoders.Replace("\n ", "\n")])
    return tok


def _merges(hf: HFTokenizer) -> list[tuple[str, str]]:
    merges = json.loads(hf.to_str())["model"]["merges"]
    return [tuple(m) if isinstance(m, list) else tuple(m.split(" ", 1)) for m in merges]


def train_superword_bpe(texts: list[str], vocab_size: int, *, min_frequency: int = 2,
                        word_fraction: float = 0.9, max_superword: int = 4) -> HFTokenizer:
    """Two-stage byte-level BPE (see the module doc); deterministic for the same texts."""
    words = _pipeline(WORD_SPLIT)
    words.train_from_iterator(texts, trainer=trainers.BpeTrainer(
        vocab_size=max(256, int(vocab_size * word_fraction)), min_frequency=min_frequency,
        show_progress=False, special_tokens=[], initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
    ), length=len(texts))
    n_words = words.get_vocab_size(with_added_tokens=False)
    vocab = dict(words.get_vocab(with_added_tokens=False))
    merges = _merges(words)
    if n_words < vocab_size and word_fraction < 1.0:
        # the superword stage's corpus: each line span as its word-stage tokens, one char each
        norm, cut = _normalizer(), pre_tokenizers.Split(Regex(LINE_SPLIT), behavior="isolated")
        spans = [s for t in texts for s, _ in cut.pre_tokenize_str(norm.normalize_str(t))]
        words.normalizer = None  # the spans are normalised already
        spelled = ["".join(chr(CHAR_BASE + i) for i in e.ids)
                   for e in words.encode_batch(spans, add_special_tokens=False)]
        alphabet = [chr(CHAR_BASE + i) for i in range(n_words)]
        supers = HFTokenizer(models.BPE())
        supers.train_from_iterator(spelled, trainer=trainers.BpeTrainer(
            vocab_size=vocab_size, min_frequency=min_frequency, show_progress=False, special_tokens=[],
            initial_alphabet=alphabet, limit_alphabet=n_words, max_token_length=max_superword,
        ), length=len(spelled))
        text_of = {i: s for s, i in vocab.items()}
        spell = lambda s: "".join(text_of[ord(c) - CHAR_BASE] for c in s)  # noqa: E731
        for a, b in _merges(supers):
            a, b = spell(a), spell(b)
            vocab.setdefault(a + b, len(vocab))  # never a word-stage token: it spans two words
            merges.append((a, b))
    return _pipeline(LINE_SPLIT, models.BPE(vocab=vocab, merges=merges))


class BPETokenizer(Tokenizer):
    """Byte-level BPE. ``level_sizes() == [trained vocabulary size]`` (may be < vocab_size)."""

    family: ClassVar[str] = "bpe"
    modality: ClassVar[str] = "text"
    version: ClassVar[str] = "2"  # 2: superword stage + newline normaliser (1: GPT-2 regex BPE)
    weights_name: ClassVar[str | None] = TOKENIZER_FILE
    defaults: ClassVar[dict[str, Any]] = {
        "vocab_size": 4096, "min_frequency": 2, "word_fraction": 0.9, "max_superword": 4,
    }

    def __init__(
        self,
        hf: HFTokenizer,
        params: dict | None = None,
        *,
        fitted_on: dict | None = None,
        tokens_per_byte: float | None = None,
        version: str | None = None,
    ):
        super().__init__(params, fitted_on=fitted_on)
        self.hf = hf
        self._tokens_per_byte = tokens_per_byte
        if version is not None and version != type(self).version:
            self.version = str(version)  # a loaded older file keeps reporting its own format

    def level_sizes(self) -> list[int]:
        # The real size: a small corpus runs out of merges before params["vocab_size"].
        return [int(self.hf.get_vocab_size(with_added_tokens=False))]

    def encode(self, x: str) -> tuple[np.ndarray, dict]:
        if not isinstance(x, str):
            raise RejectError("not_text", f"bpe expects str, got {type(x).__name__}")
        ids = self.hf.encode(x, add_special_tokens=False).ids
        return np.asarray(ids, dtype=np.int32), {}

    def encode_batch(self, xs: list) -> list[tuple[np.ndarray, dict]]:
        for x in xs:
            if not isinstance(x, str):
                raise RejectError("not_text", f"bpe expects str, got {type(x).__name__}")
        encs = self.hf.encode_batch(list(xs), add_special_tokens=False)
        return [(np.asarray(e.ids, dtype=np.int32), {}) for e in encs]

    def decode(self, codes: np.ndarray, side: dict | None = None) -> str:
        ids = self.check_codes(codes).tolist()
        return self.hf.decode(ids, skip_special_tokens=False)

    def tokens_per_unit(self) -> dict[str, float]:
        if self._tokens_per_byte is None:
            return {}
        return {"tokens_per_byte": self._tokens_per_byte}

    def weights_bytes(self) -> bytes:
        # to_str serialises the vocabulary ordered by id: stable bytes.
        return self.hf.to_str(pretty=False).encode("utf-8")

    @classmethod
    def _from_saved(cls, card: dict, directory: Path, **resources: Any) -> "BPETokenizer":
        hf = HFTokenizer.from_file(str(directory / TOKENIZER_FILE))
        tpb = (card.get("tokens_per_unit") or {}).get("tokens_per_byte")
        params = dict(card["params"])
        if str(card.get("version", "1")) == "1":  # v1 cards predate the superword params
            params = {k: v for k, v in params.items() if k in ("vocab_size", "min_frequency")}
        return cls(hf, params, fitted_on=card.get("fitted_on"), tokens_per_byte=tpb,
                   version=str(card.get("version", cls.version)))

    @classmethod
    def fit(
        cls,
        samples: list,
        params: dict,
        *,
        seed: int,
        log: Callable[[str], Any] = print,
        fitted_on: dict | None = None,
        **resources: Any,
    ) -> "BPETokenizer":
        """Train on a list of strings. BPE training has no randomness; ``seed`` is recorded."""
        p = resolve_params(cls.family, cls.defaults, params)  # bad params fail before any work
        texts = [s for s in samples if isinstance(s, str) and s]
        if not texts:
            raise RecipeError("bpe: no non-empty text samples to fit on; add .txt/.jsonl inputs")
        if p["vocab_size"] < 256:
            raise RecipeError("bpe: vocab_size must be >= 256 (the byte alphabet)")
        if not 0.0 < float(p["word_fraction"]) <= 1.0 or int(p["max_superword"]) < 2:
            raise RecipeError("bpe: word_fraction must lie in (0, 1] and max_superword be >= 2 "
                              f"(got {p['word_fraction']}, {p['max_superword']}); 1.0 turns superwords off")
        hf = train_superword_bpe(texts, int(p["vocab_size"]), min_frequency=int(p["min_frequency"]),
                                 word_fraction=float(p["word_fraction"]), max_superword=int(p["max_superword"]))
        n_bytes = sum(len(t.encode("utf-8")) for t in texts)
        n_tokens = sum(len(e.ids) for e in hf.encode_batch(texts, add_special_tokens=False))
        tpb = round(n_tokens / max(1, n_bytes), 6)
        real = hf.get_vocab_size(with_added_tokens=False)
        log(f"[bpe] trained on {len(texts)} texts ({n_bytes} bytes): vocab {real} "
            f"(asked {p['vocab_size']}), {tpb} tokens/byte")
        info = {"n_samples": len(texts), "n_bytes": n_bytes, "n_tokens": n_tokens, "seed": seed}
        info.update(fitted_on or {})
        return cls(hf, p, fitted_on=info, tokens_per_byte=tpb)
