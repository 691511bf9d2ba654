"""manifest.json and stats.json: what was written, and how every input fared.

Counts are computed with Polars and NumPy over the files just written (not
with Ray's groupby, which is slow at small scale), so they describe exactly
what is on disk.
"""
from __future__ import annotations

import subprocess
from pathlib import Path

import numpy as np
import polars as pl

import dataengine
from dataengine.vocab import MODALITIES, Vocab

MANIFEST_FORMAT = "dataengine.manifest/1"


def code_version() -> dict:
    """Package version, plus the git commit when the package runs from a checkout."""
    here = Path(dataengine.__file__).resolve().parent
    info = {"dataengine": dataengine.__version__, "git_commit": None, "git_dirty": None}
    try:
        commit = subprocess.run(["git", "-C", str(here), "rev-parse", "HEAD"], capture_output=True,
                                text=True, timeout=10)
        if commit.returncode == 0:
            info["git_commit"] = commit.stdout.strip()
            dirty = subprocess.run(["git", "-C", str(here), "status", "--porcelain", "--untracked-files=no"],
                                   capture_output=True, text=True, timeout=10)
            info["git_dirty"] = bool(dirty.stdout.strip())
    except (OSError, subprocess.SubprocessError):
        pass
    return info


def _counts(series: pl.Series) -> dict:
    vc = series.value_counts(sort=True)
    return {str(k): int(v) for k, v in sorted(zip(vc[vc.columns[0]], vc["count"]), key=lambda kv: str(kv[0]))}


def token_modality_counts(tokens: pl.Series, group: pl.Series, vocab: Vocab) -> dict[str, dict[str, int]]:
    """{group value: {modality: tokens}} from a list[int32] column, vectorised."""
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


def build_stats(out: Path, vocab: Vocab, found, shards: list[dict]) -> dict:
    files = sorted(out / s["path"] for s in shards if s["format"] == "parquet")
    seq = pl.concat([pl.read_parquet(f) for f in files]) if files else None
    rej = pl.read_parquet(out / "rejects.parquet")
    stats: dict = {
        "inputs": {
            "files": len(found.files),
            "sample_groups": len(found.units),
            "by_kind": _counts(pl.Series([u.kind for u in found.units], dtype=pl.String)),
            "by_source": _counts(pl.Series([s for s, _ in found.files], dtype=pl.String)),
        },
        "rejects": {
            "total": rej.height,
            "by_stage": _counts(rej["stage"]),
            "by_reason": _counts(rej["reason"]),
            "by_stage_reason": _counts(rej["stage"] + "/" + rej["reason"]),
        },
    }
    if seq is None or seq.height == 0:
        stats["sequences"] = {"total": 0}
        stats["tokens"] = {"total": 0}
        return stats
    n = seq["num_tokens"].cast(pl.Int64)  # Int32 sums overflow silently (NOTES)
    stats["sequences"] = {
        "total": seq.height,
        "by_split": _counts(seq["split"]),
        "by_task": _counts(seq["task"]),
        "by_kind": _counts(seq["kind"]),
        "by_source": _counts(seq["source"]),
        "repeated_copies": int((seq["repeat"] > 0).sum()),
    }
    by_source = token_modality_counts(seq["tokens"], seq["source"], vocab)
    by_modality: dict[str, int] = {}
    for mods in by_source.values():
        for m, c in mods.items():
            by_modality[m] = by_modality.get(m, 0) + c
    stats["tokens"] = {
        "total": int(n.sum()),
        "by_modality": dict(sorted(by_modality.items())),
        "by_source_modality": by_source,
        "by_task": {k: int(v) for k, v in seq.group_by("task").agg(pl.col("num_tokens").cast(pl.Int64).sum())
                    .sort("task").iter_rows()},
    }
    stats["length"] = {"min": int(n.min()), "max": int(n.max()), "mean": round(float(n.mean()), 2),
                       "p50": int(n.quantile(0.5, "nearest")), "p95": int(n.quantile(0.95, "nearest"))}
    return stats


def build_manifest(recipe, vocab: Vocab, shards: list[dict], stats: dict) -> dict:
    return {
        "format": MANIFEST_FORMAT,
        "recipe": {"name": recipe.name, "sha256": recipe.sha256, "seed": recipe.seed},
        # where lineage paths are relative to (reports show originals beside reconstructions)
        "sources": {s.name: str(recipe.resolve(s.path)) for s in recipe.sources},
        "vocab": {"path": "vocab.json", "sha256": vocab.sha256, "size": vocab.size},
        "tokenizers": vocab.tokenizers,
        "code": code_version(),
        "shards": shards,
        "totals": {
            "sequences": stats["sequences"]["total"],
            "tokens": stats["tokens"]["total"],
            "tokens_by_modality": stats["tokens"].get("by_modality", {}),
            "sequences_by_source": stats["sequences"].get("by_source", {}),
            "tokens_by_source_modality": stats["tokens"].get("by_source_modality", {}),
            "rejects": stats["rejects"]["total"],
        },
        "files": {"rejects": "rejects.parquet", "stats": "stats.json", "vocab": "vocab.json",
                  "tokenizers": "tokenizers/"},
    }
