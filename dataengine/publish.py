"""Outputs on object storage: a run writes OUT into a local mirror, Ray tasks upload it, manifest.json last.

    run_pipeline(recipe, "s3://bucket/out")
      -> everything a local run writes, into the mirror (`mirror_path`: under `execution.work_dir`)
      -> publish: 1. delete OUT/manifest.json         (from here on a reader sees no output)
                  2. Ray tasks upload the mirror's files, about `UPLOAD_BYTES` per task (cache/ stays local)
                  3. delete what OUT held that the new output lacks (a previous run's extra shards)
                  4. write OUT/manifest.json           (one PUT: the commit point)

S3 has no atomic rename of a folder (a move is a copy and a delete per object), so the commit is the
manifest: a reader that waits for `manifest.json` and reads the files it lists never sees a half-written
output. Until step 1 a previous output stays readable. A reader that already holds the old manifest
may see new bytes under an old name once uploads start: read the manifest again after a run.

The mirror keeps `cache/` (decoded and tokenized candidates), so a rerun to the same OUT from the same
work_dir re-curates without decoding again. On a cluster `work_dir` must be a folder every node sees
(the same rule as a local OUT): workers write shards there and the upload tasks read them.
"""
from __future__ import annotations

import hashlib
import os
import re
from pathlib import Path

from dataengine import storage

UPLOAD_BYTES = 256 << 20  # per upload task: many small tasks for a few large shards, few for many small files
LOCAL_ONLY = ("cache/",)  # mirror files that are not published (the candidates: kept for a rerun)
MARKERS = ("manifest.json", "vocab.json")  # a prefix holding one of these is a dataengine output


class OutputError(ValueError):
    """OUT cannot be written where it points (said before any work)."""


def mirror_path(uri: str, work_dir: str | Path = "") -> Path:
    """The local folder that holds a remote OUT while it is written: `work_dir/NAME-HASH`."""
    root = Path(work_dir or Path("~/.cache/dataengine/outputs")).expanduser().resolve()
    uri = storage.normalize(uri)
    name = re.sub(r"[^A-Za-z0-9._-]+", "_", uri.rsplit("/", 1)[-1])[:48] or "out"
    return root / f"{name}-{hashlib.sha256(uri.encode()).hexdigest()[:12]}"


def check_output(uri: str, options: storage.StorageOptions | None = None) -> None:
    """Refuse an OUT that would replace something that is not a dataengine output (a run replaces OUT whole)."""
    fs, path = storage.resolve(uri, options)
    if "/" not in path.strip("/"):
        raise OutputError(f"output {uri}: name a prefix inside the bucket (s3://bucket/out), not the bucket itself: "
                          "the run deletes what OUT held that it does not write")
    try:
        top, folders = storage.list_top(uri, options)
    except OSError as e:
        raise OutputError(f"output {uri}: cannot list it ({type(e).__name__}: {e}); check the AWS_* variables "
                          "and that the bucket exists") from None
    names = {e.rel for e in top}
    if (top or folders) and not names & set(MARKERS):
        raise OutputError(f"output {uri} holds {len(top)} files and {len(folders)} folders but no manifest.json: "
                          "it is not a dataengine output, and a run replaces OUT whole. Pick an empty prefix "
                          "(or delete that one)")


def publish(mirror: Path, uri: str, options: storage.StorageOptions | None = None, *, log=print) -> dict:
    """Upload the finished output in `mirror` to `uri`, manifest.json last; returns counts."""
    import ray

    uri = storage.normalize(uri)
    files = [(rel, size) for rel, size in _files(mirror) if rel != "manifest.json"]
    storage.delete_file(storage.join(uri, "manifest.json"), options)  # de-commit before anything changes
    groups = _groups(files, UPLOAD_BYTES)
    upload = ray.remote(num_cpus=0.5, max_retries=3)(_upload)
    ray.get([upload.remote(str(mirror), uri, [rel for rel, _ in g], options) for g in groups])
    keep = {rel for rel, _ in files} | {"manifest.json"}
    stale = [e.rel for e in storage.walk(uri, options) if e.rel not in keep]
    for rel in stale:
        storage.delete_file(storage.join(uri, rel), options)
    _commit(mirror / "manifest.json", storage.join(uri, "manifest.json"), options)
    size = sum(s for _, s in files)
    log(f"published {len(files) + 1} files ({size / 1e6:.1f} MB, {len(groups)} upload tasks) to {uri}; "
        f"{len(stale)} stale objects removed; manifest.json written last")
    return {"files": len(files) + 1, "bytes": size, "tasks": len(groups), "stale_removed": len(stale)}


def _commit(manifest: Path, uri: str, options) -> None:
    storage.write_bytes_atomic(uri, manifest.read_bytes(), options)


def _upload(mirror: str, uri: str, rels: list[str], options) -> int:
    for rel in rels:
        storage.upload_file(os.path.join(mirror, rel), storage.join(uri, rel), options)
    return len(rels)


def _files(mirror: Path) -> list[tuple[str, int]]:
    """(posix path, size) of every published file in the mirror, sorted."""
    out = []
    for dirpath, dirnames, names in os.walk(mirror):
        dirnames.sort()
        for name in sorted(names):
            p = Path(dirpath) / name
            rel = p.relative_to(mirror).as_posix()
            if not rel.startswith(LOCAL_ONLY):
                out.append((rel, p.stat().st_size))
    return sorted(out)


def _groups(files: list[tuple[str, int]], target: int) -> list[list[tuple[str, int]]]:
    """Consecutive files cut into groups of about `target` bytes (a large file is a group alone)."""
    groups, cur, size = [], [], 0
    for rel, n in files:
        if cur and size + n > target:
            groups.append(cur)
            cur, size = [], 0
        cur.append((rel, n))
        size += n
    return groups + ([cur] if cur else [])
