"""The modality registry: every modality the engine knows, one `Modality` each.

Built-in modalities are the modules of this package named in `BUILTIN`; others register
through the ``dataengine.modalities`` entry point group (a name -> a `Modality`), exactly as
a third-party package would (depth maps do, from `dataengine/modalities/depth/`). The
order is the built-ins', then the entry points' by name; it is the order of the vocabulary's
ranges and of the stats columns, so it never depends on install order.

`TEXT` is the backbone modality: every recipe has a text tokenizer (captions, labels, chat
turns), it comes first in the vocabulary, and its stats come after the media ones (the
on-disk order of format 1). `media()` is every other modality.
"""
from __future__ import annotations

import difflib
import functools
import importlib
import os
from importlib.metadata import entry_points

from dataengine.decode.text import JSONL_EXTS
from dataengine.errors import RecipeError
from dataengine.modalities.spec import DecodeContext, Decoded, Modality

BUILTIN = ("text", "image", "video", "audio", "sensor")
TEXT = "text"
GROUP = "dataengine.modalities"

__all__ = ["BUILTIN", "TEXT", "DecodeContext", "Decoded", "Modality", "by_array", "for_kind", "get", "kind_of",
           "kinds", "media", "names", "registry", "segment_exts", "split_name"]


@functools.cache
def registry() -> dict[str, Modality]:
    """name -> Modality, in registry order (built-ins, then entry points by name)."""
    mods = [importlib.import_module(f"dataengine.modalities.{n}").SPEC for n in BUILTIN]
    for ep in sorted(entry_points(group=GROUP), key=lambda e: e.name):
        try:
            spec = ep.load()
        except Exception as e:  # a broken plugin names itself; the built-ins still work
            raise RecipeError(f"modality plugin {ep.name!r} ({ep.value}) does not load: {type(e).__name__}: {e}; "
                              f"reinstall its package or uninstall it") from None
        if not isinstance(spec, Modality) or spec.name != ep.name:
            raise RecipeError(f"modality plugin {ep.name!r} ({ep.value}) must be a dataengine.modalities.Modality "
                              f"named {ep.name!r}")
        mods.append(spec)
    out: dict[str, Modality] = {}
    owners: dict[str, str] = {}
    for m in mods:
        for k in m.all_kinds():
            if k in owners:
                raise RecipeError(f"row kind {k!r} is claimed by modalities {owners[k]!r} and {m.name!r}")
            owners[k] = m.name
        out[m.name] = m
    return out


def names() -> tuple[str, ...]:
    return tuple(registry())


def media() -> tuple[Modality, ...]:
    """Every modality but the text backbone, in registry order."""
    return tuple(m for m in registry().values() if m.name != TEXT)


def get(name: str, where: str = "modality") -> Modality:
    try:
        return registry()[name]
    except KeyError:
        close = difflib.get_close_matches(str(name), list(registry()), n=1)
        hint = f"; did you mean {close[0]!r}?" if close else ""
        raise RecipeError(f"{where}: unknown modality {name!r}{hint} Known: {list(registry())} (a plugin "
                          f"modality registers through the {GROUP!r} entry point group)") from None


def kinds() -> tuple[str, ...]:
    """Every row kind: each modality's own, then the extra kinds it owns."""
    return tuple(m.name for m in registry().values()) + tuple(k for m in registry().values() for k in m.kinds)


@functools.cache
def _kind_owner() -> dict[str, Modality]:
    return {k: m for m in registry().values() for k in m.all_kinds()}


def for_kind(kind: str) -> Modality:
    """The modality that owns a row kind ("chat" -> text)."""
    try:
        return _kind_owner()[kind]
    except KeyError:
        raise ValueError(f"unknown row kind {kind!r}; known: {list(_kind_owner())}") from None


@functools.cache
def _array_owner() -> dict[str, Modality]:
    return {m.array: m for m in registry().values() if m.array}


def by_array(key: str) -> Modality | None:
    """The modality of a decoded array key ("frames" -> video; "image.3", segment 3, -> image)."""
    return _array_owner().get(key.split(".", 1)[0])


@functools.cache
def _suffixes() -> tuple[tuple[str, str], ...]:
    """(suffix, modality) of every registered extension, longest first."""
    pairs = [(ext.lower(), m.name) for m in registry().values() for ext in m.extensions]
    return tuple(sorted(pairs, key=lambda p: (-len(p[0]), p[0])))


def split_name(fname: str) -> tuple[str, str]:
    """(stem, extension) of a file name; a registered compound suffix (``scene.depth.png``) is one extension."""
    low = fname.lower()
    for suffix, _ in _suffixes():
        if suffix.count(".") > 1 and low.endswith(suffix) and len(fname) > len(suffix):
            return fname[: -len(suffix)], fname[-len(suffix):]
    return os.path.splitext(fname)


def segment_exts() -> dict[str, tuple[str, ...]]:
    """{modality: file suffixes} of the modalities an interleaved document's segment may reference."""
    return {m.name: m.extensions for m in media() if m.interleavable}


def kind_of(ext: str) -> str | None:
    """The modality whose files carry this extension (``".JPG"``, ``"jpg"`` and ``".depth.png"`` work),
    "jsonl" for record files; None for anything else."""
    ext = ext.strip().lower()
    if ext and not ext.startswith("."):
        ext = "." + ext
    for suffix, name in _suffixes():
        if ext == suffix:
            return name
    return "jsonl" if ext in JSONL_EXTS else None  # a container of records, not a modality
