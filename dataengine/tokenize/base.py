"""The tokenizer contract: every family turns one modality into int32 codes.

A tokenizer speaks in LOCAL ids ``[0, vocab_size)``; the shared vocabulary
(``dataengine.vocab``) shifts them into its global range. Multi-level families
(EnCodec's residual codebooks) lay their levels side by side: code ``c`` of
level ``k`` has local id ``sum(level_sizes()[:k]) + c``.

On disk a fitted tokenizer is a directory::

    card.yaml              family, version, params, level sizes, sha256 of weights
    weights.safetensors    (or tokenizer.json for BPE; nothing for stateless families)

Nothing is pickled: weights are safetensors, cards are ``yaml.safe_dump``.
"""
from __future__ import annotations

import difflib
import hashlib
import math
from abc import ABC, abstractmethod
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Callable, ClassVar, Iterator

import numpy as np
import torch
import yaml
from safetensors.torch import load as st_load
from safetensors.torch import save as st_save

from dataengine.errors import RecipeError

CARD_FILE = "card.yaml"
WEIGHTS_FILE = "weights.safetensors"


def sha256_file(path: str | Path) -> str:
    """Hex sha256 of a file's bytes (read in 1 MiB chunks)."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def sha256_bytes(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def resolve_params(family: str, defaults: dict[str, Any], given: dict | None) -> dict[str, Any]:
    """Fill defaults; an unknown key is a recipe error that names the close match."""
    given = dict(given or {})
    unknown = sorted(set(given) - set(defaults))
    if unknown:
        hints = []
        for key in unknown:
            close = difflib.get_close_matches(key, list(defaults), n=1)
            hints.append(f"'{key}'" + (f" (did you mean '{close[0]}'?)" if close else ""))
        raise RecipeError(
            f"unknown param {', '.join(hints)} for tokenizer family '{family}'; "
            f"known params: {', '.join(sorted(defaults))}"
        )
    out = {**defaults, **given}
    # JSON-able: tuples become lists
    return {k: list(v) if isinstance(v, tuple) else v for k, v in out.items()}


def read_card(directory: str | Path) -> dict[str, Any]:
    """Read ``directory/card.yaml`` (safe loader)."""
    path = Path(directory) / CARD_FILE
    if not path.is_file():
        raise RecipeError(
            f"no tokenizer card at {path}: fit the tokenizer first "
            f"(`dataengine fit-tokenizers`) or point the recipe at a fitted tokenizer directory"
        )
    card = yaml.safe_load(path.read_text())
    if not isinstance(card, dict) or "family" not in card:
        raise RecipeError(f"{path} is not a tokenizer card (no 'family' key)")
    return card


@contextmanager
def seeded(seed: int) -> Iterator[None]:
    """Seed torch, deterministic algorithms, ONE CPU thread; all restored afterwards.

    One thread because CPU kernels split their reductions by thread count: the same
    seed gives bitwise-identical weights on a 2-core laptop and a 64-core node. It
    is also much faster than 2 threads on a busy 2-core machine (no spin-waiting).
    """
    prev_det, prev_threads = torch.are_deterministic_algorithms_enabled(), torch.get_num_threads()
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        torch.use_deterministic_algorithms(True, warn_only=True)
        torch.set_num_threads(1)
        try:
            yield
        finally:
            torch.set_num_threads(prev_threads)
            torch.use_deterministic_algorithms(prev_det)


def cosine_lr(step: int, steps: int, lr: float, warmup: int = 20) -> float:
    """Linear warmup, then cosine decay to 10% of ``lr``."""
    if step < warmup:
        return lr * (step + 1) / warmup
    t = (step - warmup) / max(1, steps - warmup)
    return lr * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * min(1.0, t))))


def module_bytes(module: torch.nn.Module) -> bytes:
    """Deterministic safetensors bytes of a module's state dict."""
    state = {k: v.detach().cpu().contiguous() for k, v in sorted(module.state_dict().items())}
    return st_save(state)


def load_module(module: torch.nn.Module, path: Path) -> None:
    """Load safetensors weights into ``module`` (strict)."""
    module.load_state_dict(st_load(path.read_bytes()), strict=True)


def group_by_shape(xs: list[np.ndarray]) -> dict[tuple, list[int]]:
    """Indices of same-shape arrays, so each group can be stacked into one batch."""
    groups: dict[tuple, list[int]] = {}
    for i, x in enumerate(xs):
        groups.setdefault(tuple(np.shape(x)), []).append(i)
    return groups


class Tokenizer(ABC):
    """Abstract tokenizer: ``fit`` / ``encode`` / ``decode`` / card / save / load."""

    family: ClassVar[str]
    modality: ClassVar[str]
    version: ClassVar[str] = "1"
    defaults: ClassVar[dict[str, Any]] = {}
    weights_name: ClassVar[str | None] = WEIGHTS_FILE  # None: stateless, only card.yaml
    device: torch.device = torch.device("cpu")

    def __init__(self, params: dict | None = None, *, fitted_on: dict | None = None):
        self.params: dict[str, Any] = resolve_params(self.family, self.defaults, params)
        self.fitted_on: dict[str, Any] = dict(fitted_on or {})

    # --- vocabulary ------------------------------------------------------
    @abstractmethod
    def level_sizes(self) -> list[int]:
        """Codebook size of each level (one entry for single-level families)."""

    @property
    def vocab_size(self) -> int:
        return int(sum(self.level_sizes()))

    # --- codec -----------------------------------------------------------
    @abstractmethod
    def encode(self, x: Any) -> tuple[np.ndarray, dict]:
        """-> (int32 1-D local codes in [0, vocab_size), JSON-able side info)."""

    @abstractmethod
    def decode(self, codes: np.ndarray, side: dict) -> Any:
        """Inverse of ``encode``: the modality's natural array."""

    def encode_batch(self, xs: list) -> list[tuple[np.ndarray, dict]]:
        """Encode many inputs; the default loops (model families batch for real)."""
        return [self.encode(x) for x in xs]

    def decode_batch(self, items: list[tuple[np.ndarray, dict]]) -> list[Any]:
        """Decode many ``(codes, side)`` pairs; the default loops (image models batch for real)."""
        return [self.decode(codes, side) for codes, side in items]

    def check_codes(self, codes: np.ndarray) -> np.ndarray:
        """Codes as int64 1-D, or a ValueError when out of ``[0, vocab_size)``."""
        codes = np.asarray(codes).reshape(-1).astype(np.int64)
        if codes.size and (codes.min() < 0 or codes.max() >= self.vocab_size):
            raise ValueError(
                f"{self.family}: codes must lie in [0, {self.vocab_size}), got "
                f"[{codes.min()}, {codes.max()}]; were global ids passed instead of local ones?"
            )
        return codes

    def to(self, device: str | torch.device) -> "Tokenizer":
        """Move the model (if any) to ``device``; inputs follow it, outputs come back on CPU."""
        model = getattr(self, "model", None)
        if isinstance(model, torch.nn.Module):
            model.to(device)
        self.device = torch.device(device)
        return self

    # --- card and persistence ---------------------------------------------
    @abstractmethod
    def tokens_per_unit(self) -> dict[str, float]:
        """E.g. ``{"tokens_per_image": 64}`` or ``{"tokens_per_second": 15.625}``."""

    def weights_bytes(self) -> bytes | None:
        """Exact bytes of the weights file (None when stateless)."""
        return None

    def weights_sha256(self) -> str | None:
        data = self.weights_bytes()
        return None if data is None else sha256_bytes(data)

    def card(self) -> dict[str, Any]:
        return {
            "family": self.family,
            "modality": self.modality,
            "version": self.version,
            "params": dict(self.params),
            "level_sizes": [int(s) for s in self.level_sizes()],
            "vocab_size": self.vocab_size,
            "tokens_per_unit": self.tokens_per_unit(),
            "weights_sha256": self.weights_sha256(),
            "fitted_on": dict(self.fitted_on),
        }

    def save(self, directory: str | Path) -> None:
        """Write ``card.yaml`` (+ the weights file); same weights -> same bytes."""
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        data = self.weights_bytes()
        if data is not None and self.weights_name:
            (directory / self.weights_name).write_bytes(data)
        text = yaml.safe_dump(self.card(), sort_keys=True, allow_unicode=True)
        (directory / CARD_FILE).write_text(text)

    @classmethod
    def load(cls, directory: str | Path, **resources: Any) -> "Tokenizer":
        """Rebuild from a saved directory; the weights must match the card's sha256."""
        directory = Path(directory)
        card = read_card(directory)
        if card["family"] != cls.family:
            raise RecipeError(
                f"{directory} holds a '{card['family']}' tokenizer, not '{cls.family}': "
                f"use dataengine.tokenize.load_tokenizer to dispatch on the card"
            )
        if cls.weights_name:
            path = directory / cls.weights_name
            if not path.is_file():
                raise RecipeError(f"missing {path}: re-fit the tokenizer or restore it (dvc pull)")
            if card.get("weights_sha256") and sha256_file(path) != card["weights_sha256"]:
                raise RecipeError(
                    f"{path} does not match the sha256 in its card.yaml: the weights changed "
                    f"after the card was written; re-fit or restore both files together"
                )
        return cls._from_saved(card, directory, **resources)

    @classmethod
    @abstractmethod
    def _from_saved(cls, card: dict, directory: Path, **resources: Any) -> "Tokenizer":
        """Family-specific half of ``load``: build from params + weights."""

    @classmethod
    @abstractmethod
    def fit(
        cls,
        samples: list,
        params: dict,
        *,
        seed: int,
        log: Callable[[str], Any] = print,
        **resources: Any,
    ) -> "Tokenizer":
        """Fit on decoded samples; deterministic for the same seed and samples."""

    def __repr__(self) -> str:
        return f"{type(self).__name__}(vocab_size={self.vocab_size}, params={self.params})"


class ModelTokenizer(Tokenizer):
    """A family whose state is one torch module, ``self.model``, saved as safetensors."""

    model: torch.nn.Module

    def weights_bytes(self) -> bytes:
        return module_bytes(self.model)

    @classmethod
    def _from_saved(cls, card: dict, directory: Path, **resources: Any) -> "ModelTokenizer":
        tok = cls(card["params"], fitted_on=card.get("fitted_on"))
        load_module(tok.model, directory / WEIGHTS_FILE)
        return tok
