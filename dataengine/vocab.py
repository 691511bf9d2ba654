"""The shared vocabulary: one flat id space for every modality.

Layout (ids ascending):

    [0, 64)                     special tokens (pad, bos, eos, span markers, roles, reserved; `specials_for`)
    [64, 64 + n_text)           text BPE
    [.., ..)                    each other modality's codes, in registry order (`dataengine.modalities`):
                                image, video, audio (one range per residual level), sensor, then later ones

Each tokenizer emits *local* codes in ``[0, tokenizer.vocab_size)`` (levels
laid end to end); the vocabulary maps local to global by adding the start of
the tokenizer's first range. The modality of any id is a lookup
(`Vocab.modality_of`). `vocab.json` is the contract with the trainer: it is
written canonically (sorted keys, fixed separators) and hashed.
"""
from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from dataengine import modalities
from dataengine.errors import RecipeError

FORMAT = "dataengine.vocab/1"
NUM_SPECIALS = 64  # reserved up front so adding a marker later never shifts the ranges

BASE_SPECIALS = ("<|pad|>", "<|bos|>", "<|eos|>")
CHAT_SPECIALS = ("<|system|>", "<|user|>", "<|assistant|>", "<|end_turn|>")
MODALITIES: tuple[str, ...] = ("special",) + modalities.names()  # modality_index values, registry order


def specials_for(names) -> tuple[str, ...]:
    """The special tokens in id order: pad/bos/eos, the markers of the modalities of vocab format 1 (their
    ids never move), the chat roles, then the markers of every later modality among `names` (registry
    order). `vocab.json` records the result, so a vocabulary reads back the same whatever is installed."""
    reg, names = modalities.registry().values(), set(names)
    v1 = [t for m in reg if m.in_vocab_v1 for t in m.specials]
    later = [t for m in reg if not m.in_vocab_v1 and m.name in names for t in m.specials]
    out = BASE_SPECIALS + tuple(v1) + CHAT_SPECIALS + tuple(later)
    if len(out) > NUM_SPECIALS:
        raise RecipeError(f"{len(out)} special tokens do not fit the {NUM_SPECIALS} reserved ids; "
                          "tokenize fewer modalities together")
    return out


@dataclass(frozen=True)
class Range:
    name: str        # tokenizer name in the recipe (e.g. "image")
    modality: str    # one of MODALITIES
    family: str      # tokenizer family (e.g. "fsq_image")
    level: int       # residual level (0 for single-level tokenizers)
    start: int       # first global id
    size: int        # number of ids

    @property
    def end(self) -> int:
        return self.start + self.size


class Vocab:
    """Special tokens plus one contiguous block of ranges per tokenizer."""

    def __init__(self, ranges: list[Range], tokenizers: dict[str, dict], specials: dict[str, int] | None = None):
        self.ranges = sorted(ranges, key=lambda r: r.start)
        self.tokenizers = tokenizers  # name -> {family, modality, weights_sha256, vocab_size}
        if specials is None:
            specials = {tok: i for i, tok in enumerate(specials_for(r.modality for r in self.ranges))}
        self.specials = dict(specials)
        expected = NUM_SPECIALS
        for r in self.ranges:
            if r.start != expected or r.size <= 0:
                raise ValueError(f"vocab ranges must be contiguous and non-empty; {r} breaks at {expected}")
            expected = r.end
        self.size = expected
        # lookup tables for modality_of: boundaries and the modality index of each interval
        self._bounds = np.array([0, NUM_SPECIALS] + [r.end for r in self.ranges], dtype=np.int64)
        self._mods = np.array(
            [MODALITIES.index("special")] + [MODALITIES.index(r.modality) for r in self.ranges], dtype=np.int8
        )

    # ---- construction -------------------------------------------------------------
    @classmethod
    def build(cls, tokenizers: dict) -> "Vocab":
        """Lay out ranges for `tokenizers` (name -> Tokenizer) in modality order, then name order."""
        order = sorted(tokenizers.items(), key=lambda kv: (MODALITIES.index(kv[1].modality), kv[0]))
        ranges, start, info = [], NUM_SPECIALS, {}
        for name, tok in order:
            for level, size in enumerate(tok.level_sizes()):
                ranges.append(Range(name, tok.modality, tok.family, level, start, int(size)))
                start += int(size)
            card = tok.card()
            info[name] = {
                "family": tok.family,
                "modality": tok.modality,
                "vocab_size": int(tok.vocab_size),
                "weights_sha256": card.get("weights_sha256"),
            }
        return cls(ranges, info)

    def to_dict(self) -> dict:
        body = {
            "format": FORMAT,
            "size": self.size,
            "num_specials": NUM_SPECIALS,
            "specials": {tok: i for tok, i in self.specials.items()},
            "ranges": [r.__dict__ for r in self.ranges],
            "tokenizers": self.tokenizers,
        }
        body["sha256"] = hashlib.sha256(_canonical(body)).hexdigest()
        return body

    @property
    def sha256(self) -> str:
        return self.to_dict()["sha256"]

    def save(self, path: Path) -> None:
        Path(path).write_bytes(_canonical(self.to_dict(), indent=1))

    @classmethod
    def load(cls, path: Path) -> "Vocab":
        data = json.loads(Path(path).read_text())
        if data.get("format") != FORMAT:
            raise RecipeError(f"{path} is not a {FORMAT} file (format={data.get('format')!r})")
        vocab = cls([Range(**r) for r in data["ranges"]], data["tokenizers"], data.get("specials"))
        if vocab.sha256 != data.get("sha256"):
            raise RecipeError(f"{path}: sha256 does not match its content; the file was edited by hand")
        return vocab

    # ---- lookups ------------------------------------------------------------------
    def special(self, token: str) -> int:
        return self.specials[token]

    def tokenizer_range(self, name: str) -> tuple[int, int]:
        """[start, end) of all levels of tokenizer `name`."""
        rs = [r for r in self.ranges if r.name == name]
        if not rs:
            raise KeyError(f"no tokenizer named {name!r} in the vocabulary (have: {sorted(self.tokenizers)})")
        return rs[0].start, rs[-1].end

    def to_global(self, name: str, local: np.ndarray) -> np.ndarray:
        start, end = self.tokenizer_range(name)
        local = np.asarray(local, dtype=np.int64)
        if local.size and (local.min() < 0 or local.max() >= end - start):
            raise ValueError(f"tokenizer {name!r} produced codes outside [0, {end - start})")
        return (local + start).astype(np.int32)

    def to_local(self, name: str, ids: np.ndarray) -> np.ndarray:
        start, end = self.tokenizer_range(name)
        ids = np.asarray(ids, dtype=np.int64)
        if ids.size and (ids.min() < start or ids.max() >= end):
            raise ValueError(f"ids outside the range [{start}, {end}) of tokenizer {name!r}")
        return (ids - start).astype(np.int32)

    def modality_index(self, ids: np.ndarray) -> np.ndarray:
        """Index into MODALITIES of every id (int8); raises on ids outside the vocabulary."""
        ids = np.asarray(ids, dtype=np.int64)
        if ids.size and (ids.min() < 0 or ids.max() >= self.size):
            raise ValueError(f"ids outside the vocabulary [0, {self.size})")
        return self._mods[np.searchsorted(self._bounds, ids, side="right") - 1]

    def modality_of(self, ids: np.ndarray) -> np.ndarray:
        """Modality name of every id (array of str); raises on ids outside the vocabulary."""
        return np.asarray(MODALITIES, dtype=object)[self.modality_index(ids)]


def _canonical(obj: dict, indent: int | None = None) -> bytes:
    return (json.dumps(obj, sort_keys=True, indent=indent, ensure_ascii=False) + "\n").encode()


def token_modality_counts(tokens, group, vocab: Vocab) -> dict[str, dict[str, int]]:
    """{group value: {modality: tokens}} from a list[int32] Polars column and a group column, vectorised."""
    lengths = tokens.list.len().to_numpy().astype(np.int64)
    flat = tokens.explode().drop_nulls().to_numpy().astype(np.int64)
    if flat.size == 0:
        return {}
    mod_idx = vocab.modality_index(flat)
    keys, key_idx = np.unique(group.to_numpy().astype(str), return_inverse=True)
    per_token_group = np.repeat(key_idx, lengths)
    table = np.zeros((len(keys), len(MODALITIES)), dtype=np.int64)
    np.add.at(table, (per_token_group, mod_idx), 1)
    return {str(k): {m: int(table[i, j]) for j, m in enumerate(MODALITIES) if table[i, j]}
            for i, k in enumerate(keys)}
