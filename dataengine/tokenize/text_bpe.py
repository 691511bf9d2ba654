"""`bpe`: byte-level BPE over text, trained with Hugging Face `tokenizers`.

NFC normaliser, ByteLevel pre-tokenizer (no prefix space) and ByteLevel
decoder, so any Unicode string round-trips exactly up to NFC normalisation
(``decode(encode(s)) == unicodedata.normalize("NFC", s)``). The 256 byte
symbols are always in the vocabulary, so nothing is ever unknown. No special
tokens live here: pad/bos/eos/markers belong to the shared vocabulary.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Callable, ClassVar

import numpy as np
from tokenizers import Tokenizer as HFTokenizer
from tokenizers import decoders, models, normalizers, pre_tokenizers, trainers

from dataengine.errors import RecipeError, RejectError
from dataengine.tokenize.base import Tokenizer, resolve_params

TOKENIZER_FILE = "tokenizer.json"


def _empty_bpe() -> HFTokenizer:
    """The untrained pipeline: NFC -> byte-level pre-tokenizer -> BPE -> byte-level decoder."""
    tok = HFTokenizer(models.BPE())
    tok.normalizer = normalizers.NFC()
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
    tok.decoder = decoders.ByteLevel()
    return tok


class BPETokenizer(Tokenizer):
    """Byte-level BPE. ``level_sizes() == [trained vocabulary size]`` (may be < vocab_size)."""

    family: ClassVar[str] = "bpe"
    modality: ClassVar[str] = "text"
    weights_name: ClassVar[str | None] = TOKENIZER_FILE
    defaults: ClassVar[dict[str, Any]] = {"vocab_size": 4096, "min_frequency": 2}

    def __init__(
        self,
        hf: HFTokenizer,
        params: dict | None = None,
        *,
        fitted_on: dict | None = None,
        tokens_per_byte: float | None = None,
    ):
        super().__init__(params, fitted_on=fitted_on)
        self.hf = hf
        self._tokens_per_byte = tokens_per_byte

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
        return cls(hf, card["params"], fitted_on=card.get("fitted_on"), tokens_per_byte=tpb)

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
        trainer = trainers.BpeTrainer(
            vocab_size=int(p["vocab_size"]),
            min_frequency=int(p["min_frequency"]),
            show_progress=False,
            special_tokens=[],
            initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        )
        hf = _empty_bpe()
        hf.train_from_iterator(texts, trainer=trainer, length=len(texts))
        n_bytes = sum(len(t.encode("utf-8")) for t in texts)
        n_tokens = sum(len(e.ids) for e in hf.encode_batch(texts, add_special_tokens=False))
        tpb = round(n_tokens / max(1, n_bytes), 6)
        real = hf.get_vocab_size(with_added_tokens=False)
        log(f"[bpe] trained on {len(texts)} texts ({n_bytes} bytes): vocab {real} "
            f"(asked {p['vocab_size']}), {tpb} tokens/byte")
        info = {"n_samples": len(texts), "n_bytes": n_bytes, "n_tokens": n_tokens, "seed": seed}
        info.update(fitted_on or {})
        return cls(hf, p, fitted_on=info, tokens_per_byte=tpb)

