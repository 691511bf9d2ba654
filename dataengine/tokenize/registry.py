"""Tokenizer families by name, and loading a fitted tokenizer from its card."""
from __future__ import annotations

import difflib
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


def get_family(name: str) -> type[Tokenizer]:
    """The tokenizer class for a family name; an unknown name is a RecipeError with a hint."""
    try:
        return FAMILIES[name]
    except (KeyError, TypeError):
        close = difflib.get_close_matches(str(name), list(FAMILIES), n=1)
        hint = f" (did you mean '{close[0]}'?)" if close else ""
        raise RecipeError(
            f"unknown tokenizer family {name!r}{hint}; known families: {', '.join(sorted(FAMILIES))}"
        ) from None


def load_tokenizer(directory: str | Path, **resources: Any) -> Tokenizer:
    """Load a fitted tokenizer: reads ``directory/card.yaml`` and dispatches on its family.

    ``resources`` are passed through, e.g. ``image_tokenizer=`` for the `frames` family.
    """
    card = read_card(directory)
    return get_family(card["family"]).load(Path(directory), **resources)
