"""manifest.json and stats.json: what was written, and how every input fared.

Counts are computed by the workers that wrote each shard, over the rows they
wrote (`shards.plan.shard_stats`), and summed here, so they describe exactly
what is on disk without reading it back.
"""
from __future__ import annotations

import subprocess
from pathlib import Path

import dataengine
from dataengine.shards.plan import merge_stats
from dataengine.vocab import Vocab

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


def build_stats(inputs: dict, rejects: dict, shard_stats: list[dict]) -> dict:
    """stats.json from the listing's counts (`Listing.inputs`), the reject counts and the shards' own
    stats (merged, never re-read)."""
    sequences, tokens, length = merge_stats(shard_stats)
    stats: dict = {
        "inputs": inputs,
        "rejects": rejects,
        "sequences": sequences,
        "tokens": tokens,
    }
    if length:
        stats["length"] = length
    return stats


def build_manifest(recipe, vocab: Vocab, shards: list[dict], stats: dict, mixture: dict | None = None) -> dict:
    """`mixture`: the plan the trainer's loader follows (curate.distributed.manifest_plan); each row is
    written once, and a row of group g is read full[g] + (rank bin < cut[g]) times per epoch."""
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
        "mixture": mixture,
        "files": {"rejects": "rejects.parquet", "stats": "stats.json", "vocab": "vocab.json",
                  "tokenizers": "tokenizers/"},
    }
