"""The candidates cache: decoded, tokenized and measured items, kept in OUT for the next run.

Decoding and tokenizing are the expensive part of a run; filtering, dedup,
balancing and writing are cheap. `OUT/cache/candidates.parquet` holds every
tokenized item with its stats (and every decode/tokenize reject), keyed by
everything that can change them: the decode settings, the tokenizers' weights,
the composition settings, the seed, and the name, size and mtime of every
input file. A rerun with only new thresholds, dedup or mixture settings reads
the cache and goes straight to curation.
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

CACHE_DIR = "cache"
CACHE_FORMAT = "dataengine.candidates/1"


def candidates_key(recipe, tokenizers: dict, found) -> str:
    """sha256 over what decides the candidates; any change re-decodes and re-tokenizes."""
    files = sorted([u.source, u.unit_id, u.stamps] for u in found.units)  # stamps: size + mtime of every file
    inputs = {
        "format": CACHE_FORMAT,
        "seed": recipe.seed,
        "decode": dataclasses.asdict(recipe.decode),
        "compose": dataclasses.asdict(recipe.compose),
        "token_recon": recipe.curate.token_recon,
        "tokenizers": {k: v.get("weights_sha256") for k, v in sorted(tokenizers.items())},
        "files": files,
    }
    return hashlib.sha256(json.dumps(inputs, sort_keys=True, default=str).encode()).hexdigest()


def load_candidates(output: Path, key: str, schema: pa.Schema) -> pa.Table | None:
    """The cached candidates of a previous run into `output`, if its key matches; else None."""
    meta_path = Path(output) / CACHE_DIR / "candidates.json"
    data_path = Path(output) / CACHE_DIR / "candidates.parquet"
    try:
        meta = json.loads(meta_path.read_text())
    except (OSError, ValueError):
        return None
    if meta.get("key") != key or meta.get("format") != CACHE_FORMAT:
        return None
    try:
        table = pq.read_table(data_path)
        return table.select(schema.names).cast(schema)
    except (OSError, pa.ArrowException, KeyError):
        return None  # an unreadable or outdated cache is recomputed, never trusted


def save_candidates(staging: Path, key: str, table: pa.Table) -> None:
    d = Path(staging) / CACHE_DIR
    d.mkdir(parents=True, exist_ok=True)
    pq.write_table(table, d / "candidates.parquet", compression="zstd", compression_level=3)
    (d / "candidates.json").write_text(json.dumps({"format": CACHE_FORMAT, "key": key,
                                                   "rows": table.num_rows}, indent=1) + "\n")
