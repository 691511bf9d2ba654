"""Tokenizer families by name, and loading a fitted tokenizer from its card.

The built-in families are listed here; others register through the ``dataengine.tokenizers`` entry
point group (family name -> a `Tokenizer` subclass), as a third-party package would (depth maps' family
does, from `dataengine/modalities/depth/`).
"""
from __future__ import annotations

import difflib
import functools
from importlib.metadata import entry_points
from pathlib import Path
from typing import Any

from dataengine.errors import RecipeError
from dataengine.tokenize.audio_encodec import EncodecTokenizer
from dataengine.tokenize.audio_mel_fsq import MelFSQTokenizer
from dataengine.tokenize.base import Tokenizer, read_card
from dataengine.tokenize.image_fsq import FSQImageTokenizer
from dataengine.tokenize.sensor_bins import SensorBinsTokenizer
from dataengine.tokenize.text_bpe import BPETokenizer
from dataengine.tokenize.video_causal import CausalVideoTokenizer
from dataengine.tokenize.video_frames import FramesTokenizer

FAMILIES: dict[str, type[Tokenizer]] = {
    cls.family: cls
    for cls in (
        BPETokenizer,
        FSQImageTokenizer,
        FramesTokenizer,
        CausalVideoTokenizer,
        MelFSQTokenizer,
        EncodecTokenizer,
        SensorBinsTokenizer,
    )
}


GROUP = "dataengine.tokenizers"


@functools.cache
def plugin_families() -> dict[str, type[Tokenizer]]:
    """Families registered through entry points, by name (loaded once per process)."""
    out: dict[str, type[Tokenizer]] = {}
    for ep in sorted(entry_points(group=GROUP), key=lambda e: e.name):
        try:
            cls = ep.load()
        except Exception as e:  # a broken plugin names itself
            raise RecipeError(f"tokenizer plugin {ep.name!r} ({ep.value}) does not load: {type(e).__name__}: {e}; "
                              "reinstall its package or uninstall it") from None
        if not (isinstance(cls, type) and issubclass(cls, Tokenizer) and cls.family == ep.name):
            raise RecipeError(f"tokenizer plugin {ep.name!r} ({ep.value}) must be a Tokenizer subclass whose "
                              f"family is {ep.name!r}")
        if ep.name in FAMILIES:
            raise RecipeError(f"tokenizer plugin {ep.name!r} ({ep.value}) reuses a built-in family name")
        out[ep.name] = cls
    return out


def get_family(name: str) -> type[Tokenizer]:
    """The tokenizer class for a family name; an unknown name is a RecipeError with a hint."""
    if isinstance(name, str) and name in FAMILIES:
        return FAMILIES[name]
    known = {**FAMILIES, **plugin_families()}
    try:
        return known[name]
    except (KeyError, TypeError):
        close = difflib.get_close_matches(str(name), list(known), n=1)
        hint = f" (did you mean '{close[0]}'?)" if close else ""
        raise RecipeError(
            f"unknown tokenizer family {name!r}{hint}; known families: {', '.join(sorted(known))} (a plugin "
            f"family registers through the {GROUP!r} entry point group)"
        ) from None


def load_tokenizer(directory: str | Path, **resources: Any) -> Tokenizer:
    """Load a fitted tokenizer: reads ``directory/card.yaml`` and dispatches on its family.

    ``resources`` are passed through, e.g. ``image_tokenizer=`` for the `frames` family.
    """
    card = read_card(directory)
    return get_family(card["family"]).load(Path(directory), **resources)
