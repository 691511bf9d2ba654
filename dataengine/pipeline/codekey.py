"""The code that makes the candidate rows, as one digest for the candidates cache key.

A cached candidate part holds what the work items computed: decoded media, tokens, stats,
content hashes. New code there (a new stat, a decoder fix, another tokenizer rule) must not be
answered from parts that older code wrote, so the cache key (`pipeline.cache.candidates_key`)
includes this digest: sha256 over the source bytes of the work items' modules and of every
`dataengine` module they import, transitively. Imports are read statically (`ast`: top-level and
function-local ones alike; `from X import Y` counts X.Y when it is a module), so the digest is
the same on every machine for the same checkout, and code that only runs after the candidates
(curation's shuffles, shard writers, the report, the trainer, the CLI) can change without a
re-decode. Reading a few dozen files costs milliseconds, once per run, on the driver.
"""
from __future__ import annotations

import ast
import functools
import hashlib
from pathlib import Path

from dataengine import modalities

PACKAGE = "dataengine"
ROOT = Path(__file__).resolve().parents[2]  # the folder that holds the package
# what a work item runs: decode (in its watched child too), tokenize, crash isolation, the units it reads
ENTRIES = ("dataengine.pipeline.decode_stage", "dataengine.pipeline.tokenize_stage", "dataengine.pipeline.budget",
           "dataengine.pipeline.isolation", "dataengine.listing")
OWN_FILES = ("dataengine.pipeline.items",)  # its file, not its imports (those reach the driver's run loop)


def _path(root: Path, module: str) -> Path | None:
    p = root.joinpath(*module.split("."))
    if p.with_suffix(".py").is_file():
        return p.with_suffix(".py")
    return p / "__init__.py" if (p / "__init__.py").is_file() else None


def _imports(module: str, path: Path) -> list[str]:
    out = []
    package = module.split(".") if path.name == "__init__.py" else module.split(".")[:-1]
    for node in ast.walk(ast.parse(path.read_bytes(), str(path))):
        if isinstance(node, ast.Import):
            out += [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                up = package[:len(package) - node.level + 1]
                base = ".".join(up + ([base] if base else []))
            out += [base] + [f"{base}.{a.name}" for a in node.names]
    return [m for m in out if m.split(".")[0] == PACKAGE]


def closure(entries=ENTRIES, root: Path = ROOT) -> dict[str, Path]:
    """Every package module `entries` import, transitively (their packages' __init__ included)."""
    seen: dict[str, Path] = {}
    todo = list(entries)
    while todo:
        m = todo.pop()
        if m in seen:
            continue
        p = _path(root, m)
        if p is None:  # a name imported from a module (a function, a class): not a module itself
            continue
        seen[m] = p
        for name in _imports(m, p):
            parts = name.split(".")
            todo += [".".join(parts[:i]) for i in range(1, len(parts) + 1)]
    return seen


def modality_entries() -> tuple[str, ...]:
    """The modules of the registered modalities (the registry loads them by name, which `ast` cannot see)."""
    return tuple(sorted({m.decode.__module__ for m in modalities.registry().values() if m.decode is not None}))


def code_digest(entries=None, own_files=OWN_FILES, root: Path = ROOT) -> str:
    """sha256 over the work items' code; `entries` default: ENTRIES and every registered modality's module
    (a plugin outside this package is not read: its own version is the user's to pin)."""
    mods = closure(ENTRIES + modality_entries() if entries is None else entries, root)
    mods.update({m: p for m in own_files if (p := _path(root, m)) is not None})
    h = hashlib.sha256()
    for m in sorted(mods):
        h.update(m.encode() + b"\0" + mods[m].read_bytes() + b"\0")
    return h.hexdigest()


@functools.cache
def candidates_code() -> str:
    """`code_digest` of this checkout (computed once per process)."""
    return code_digest()
