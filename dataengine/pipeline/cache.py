"""The candidates cache: decoded, tokenized and measured items, kept in OUT for the next run.

Decoding and tokenizing are the expensive part of a run; filtering, dedup,
balancing and writing are cheap. `OUT/cache/candidates/part-NNNNNN.parquet`
holds every tokenized item with its stats (and every decode/tokenize reject),
one part per work item as the workers wrote it, keyed by everything that can
change them: the code that computes them (`pipeline.codekey`), the decode
settings, the tokenizers' weights, the composition settings, the seed, and the
name, size and mtime of every input file. A rerun
with only new thresholds, dedup or mixture settings reuses the parts and goes
straight to curation. Read them all with `pl.read_parquet(OUT / CANDIDATES_GLOB)`.
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import shutil
from pathlib import Path

CACHE_DIR = "cache"
CANDIDATES = "cache/candidates"
CANDIDATES_GLOB = "cache/candidates/*.parquet"
CACHE_FORMAT = "dataengine.candidates/2"


def candidates_key(recipe, tokenizers: dict, listing_digest: str) -> str:
    """sha256 over what decides the candidates; any change re-decodes and re-tokenizes.

    `listing_digest` (`Listing.digest`) covers every unit's source, id and stamps (the size and
    mtime of each of its files) and the order the listing gives them (which cuts the work items);
    `pipeline.codekey` covers the code that computes the rows."""
    from dataengine.pipeline.codekey import candidates_code

    inputs = {
        "code": candidates_code(),
        "format": CACHE_FORMAT,
        "seed": recipe.seed,
        "decode": dataclasses.asdict(recipe.decode),
        "compose": dataclasses.asdict(recipe.compose),
        "token_recon": recipe.curate.token_recon,
        "tokenizers": {k: v.get("weights_sha256") for k, v in sorted(tokenizers.items())},
        "item_units": recipe.execution.item_units,
        "files": listing_digest,
    }
    return hashlib.sha256(json.dumps(inputs, sort_keys=True, default=str).encode()).hexdigest()


def candidate_files(out: Path) -> list[Path]:
    return sorted((Path(out) / CANDIDATES).glob("part-*.parquet"))


def load_candidates(output: Path, key: str) -> list[Path] | None:
    """The candidate parts of a previous run into `output`, if its key matches and every part is there."""
    try:
        meta = json.loads((Path(output) / CACHE_DIR / "candidates.json").read_text())
    except (OSError, ValueError):
        return None
    parts = candidate_files(output)
    if meta.get("key") != key or meta.get("format") != CACHE_FORMAT or meta.get("parts") != len(parts):
        return None  # another key, or an incomplete cache: recomputed, never trusted
    return parts


def save_candidates(staging: Path, key: str, parts: list[Path]) -> None:
    """Link (or copy) the parts into staging's cache; a part is never rewritten."""
    d = Path(staging) / CANDIDATES
    d.mkdir(parents=True, exist_ok=True)
    for p in parts:
        try:
            os.link(p, d / p.name)
        except OSError:
            shutil.copy2(p, d / p.name)
    (Path(staging) / CACHE_DIR / "candidates.json").write_text(json.dumps(
        {"format": CACHE_FORMAT, "key": key, "parts": len(parts)}, indent=1) + "\n")
