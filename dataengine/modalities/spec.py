"""What one modality is, in one object: the contract every modality module fills in.

The engine's shared code (discovery, decode, stats, tokenize, compose, dedup, fit,
eval, inspect) never names a modality: it asks the registry (`dataengine.modalities`)
for the `Modality` of a file, a row kind or an array, and calls its hooks. A hook
left at None means "this modality has none" (a text document has no pixels to
resize; sensor has no generation task), and the shared code skips it.

Names used below:
  kind     the row kind a sample group becomes ("image"; a modality may own extra
           row kinds: text owns "chat" and "interleaved")
  array    the key of the modality's decoded array in a decoded row ("frames" for video)
  role     the recipe's `tokenizers.<name>` key: a modality's name
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np


@dataclass(frozen=True)
class DecodeContext:
    """What a decode hook may use besides the bytes: the recipe's `decode:` settings (one section per
    modality: ``config.<name>``), the tokenizer input side of each modality that has one, and the
    modalities the recipe tokenizes."""

    config: Any
    sizes: dict[str, int]
    modalities: frozenset[str]


@dataclass
class Decoded:
    """One decoded media file: `arrays` at the tokenizer's size (what the tokenize stage encodes),
    `full` at the decoded resolution (what the content hash and the stats see), `stats_meta` what the
    stats need besides the arrays. `text`: a text document's normalised text (hashed instead of arrays)."""

    arrays: dict[str, np.ndarray]
    full: dict[str, np.ndarray]
    stats_meta: dict
    text: str | None = None


@dataclass(frozen=True)
class Modality:
    name: str                                 # the modality, its row kind, its tokenizer role, its vocab ranges
    array: str | None = None                  # its decoded array's key (None: no array, e.g. text)
    extensions: tuple[str, ...] = ()          # file suffixes discovery files under it (compound ones allowed:
    #                                           ".depth.png"; the longest match wins)
    kinds: tuple[str, ...] = ()               # row kinds besides `name` that it owns (text: chat, interleaved)
    # ---- sequence layout (compose.sequence)
    markers: tuple[str, str] = ("", "")       # begin / end specials around each of its spans
    separator: str | None = None              # special between rows of one span (frames, time steps)
    rows: Callable[[dict, np.ndarray], int] | None = None  # rows of a span from its side info and codes
    in_vocab_v1: bool = False                 # its specials hold the fixed ids of vocab format 1 (the first five)
    paired_text: str | None = None            # what its text is called in task names: caption, transcript, label
    # ---- tasks (compose.tasks); `tasks` lists every task of its kind, in draw order
    tasks: tuple[str, ...] = ()
    default_tasks: dict[str, float] = field(default_factory=dict)
    templates: tuple[str, ...] = ()           # user turns of its instruction task
    host_tasks: dict[str, dict[str, float]] = field(default_factory=dict)  # tasks it adds to host kinds
    #                                           when aligned with them ({"image": {"image_to_depth": 0.3}})
    aligns_with: tuple[str, ...] = ()         # kinds it joins as an aligned companion in one sample group
    carried_by: tuple[str, ...] = ()          # kinds whose span it always travels with (a video's audio track)
    interleavable: bool = False               # may be a segment of an interleaved .jsonl document
    # ---- curation
    ngram: int = 2                            # dedup shingle size over its codes (curate.dedup)
    threshold: float = 0.5                    # dedup verification threshold (estimated Jaccard)
    stat_fields: dict[str, Any] = field(default_factory=dict)  # name -> pyarrow type (curate.stats)
    # ---- hooks
    decode_config: type | None = None         # dataclass of the recipe's `decode.<name>` section
    decode: Callable[[bytes, str, dict | None, dict, DecodeContext], Decoded] | None = None
    #                                           (data, path, sidecar, meta to fill, context)
    stats: Callable[[dict, dict], dict] | None = None  # (full arrays, stats_meta) -> stats of stat_fields
    size_param: str | None = None             # tokenizer param that is its input side ("size")
    needs: tuple[str, ...] = ()               # tokenizers it is built on (video: image), fitted and loaded first
    fit_items: Callable[[np.ndarray], dict[str, list]] | None = None  # decoded array -> {role: fitting items}
    fit_resources: Callable[[Callable[[str], Any], dict[str, list]], dict] | None = None
    #                                           (load fitted role, fitting samples) -> extra arguments of fit
    recon_mse: Callable[[np.ndarray, np.ndarray, Any], float] | None = None  # (original, decoded, tokenizer)
    recon_unit: str = ""                      # the unit of recon_mse, for the report
    write_decoded: Callable[[Path, Any, dict, dict, Any], Path] | None = None  # (stem, value, side, meta, tok)
    picture: bool = False                     # decoded files show as pictures (Markdown image links)
    evaluate: Callable[..., dict] | None = None  # (tokenizer, items, roundtrip, resources) -> metrics
    eval_keys: tuple[str, ...] = ()           # metrics shown in tables
    eval_resources: Callable[[Any], dict] | None = None  # recipe decode config -> evaluate's resources
    check_recipe: Callable[[Any, str], None] | None = None  # (recipe, where): RecipeError naming the fix
    color: str = "#bab0ac"                    # its colour in plots and the report

    @property
    def specials(self) -> tuple[str, ...]:
        """Its special tokens: markers, then the row separator."""
        out = tuple(m for m in self.markers if m)
        return out + ((self.separator,) if self.separator else ())

    def all_kinds(self) -> tuple[str, ...]:
        return (self.name,) + self.kinds
