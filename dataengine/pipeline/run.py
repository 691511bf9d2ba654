"""`dataengine run`: compile a recipe into a Ray Data pipeline and write the outputs.

    listing (Ray tasks over folders/prefixes: dataengine/listing.py) -> work items -> decode + stats + tokenize + compose (Ray actor pool; each worker
      writes its item's candidate part) -> candidates (kept in OUT/cache) -> curate: filter, dedup, split,
      mixture, shard writing (Ray tasks over the parts: curate/distributed.py) -> rejects (a task),
      stats and manifest (merged on the driver from per-task and per-shard counts) -> the report's
      digest (Ray tasks: report/digest.py) -> report.html

Everything is written to a staging folder beside OUT and moved into place at
the end, so a reader never sees a half-written OUT. An OUT on object storage (s3://...) is
written into a local mirror the same way, then uploaded by Ray tasks with manifest.json last
(dataengine/publish.py). The same code runs on a
local Ray (started here) and on a cluster (`--address` or `ray job submit`).
"""
from __future__ import annotations

import json
import os
import shutil
import signal
import time
from pathlib import Path

from dataengine import diskspace, publish, storage
from dataengine.curate.distributed import curate_and_write, shuffle_dir, write_rejects
from dataengine.listing import Listing, run_listing
from dataengine.pipeline.cache import CACHE_DIR, candidates_key, load_candidates, save_candidates
from dataengine.pipeline.items import WorkDir, run_items
from dataengine.pipeline.ray_session import init_ray
from dataengine.pipeline.tokenize_stage import load_tokenizers
from dataengine.recipe import Recipe, source_roots
from dataengine.report.build import build_report
from dataengine.report.digest import build_digest
from dataengine.shards.manifest import build_manifest, build_stats
from dataengine.tokenize.fit import ensure_tokenizers
from dataengine.vocab import Vocab


def run_pipeline(recipe: Recipe, output: Path, *, tokenizers_dir: Path | None = None,
                 address: str | None = None, log=print, report: bool = True) -> dict:
    """Run `recipe` and write OUT; returns the manifest. `report=False` skips OUT/report.html."""
    t0 = time.time()
    remote = storage.normalize(output) if storage.is_remote(output) else None
    if remote:  # written into a local mirror, then published (dataengine/publish.py)
        publish.check_output(remote, storage.options_from_env())
    output = local_output(recipe, output)
    sources = source_roots(recipe)
    tokdir = Path(tokenizers_dir) if tokenizers_dir else recipe.resolve(recipe.tokenizers_dir)
    ensure_tokenizers(recipe, tokdir, log=log)
    roles = sorted(recipe.tokenizers)
    vocab = Vocab.build(load_tokenizers(tokdir, roles))

    staging = output.parent / f".{output.name}.staging"  # a killed run's staging is stale: start it again
    at = {"step": "copying the tokenizers", "need": None}  # where a full disk would stop the run
    try:
        manifest, stats, shards = _build(recipe, output, staging, sources, tokdir, roles, vocab, address, log, at,
                                         report)
    except Exception as e:
        if not diskspace.is_disk_full(e):
            raise
        raise _out_of_room(output, staging, at) from None
    if remote:
        _maybe_kill("publish")  # a finished mirror, nothing uploaded yet
        publish.publish(output, remote, storage.options_from_env(), log=log)
    log(f"wrote {stats['sequences']['total']} sequences ({stats['tokens']['total']} tokens) in "
        f"{len([s for s in shards if s['format'] == 'parquet'])} parquet shards, "
        f"{stats['rejects']['total']} rejects, in {time.time() - t0:.1f}s")
    return manifest


def _build(recipe: Recipe, output: Path, staging: Path, sources, tokdir: Path, roles: list[str], vocab: Vocab,
           address, log, at: dict, report: bool) -> tuple[dict, dict, list]:
    """Everything `run_pipeline` writes, into `staging`, then swapped into OUT; `at` says how far it got."""
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir(parents=True)
    vocab.save(staging / "vocab.json")
    _copy_tokenizers(tokdir, roles, staging / "tokenizers")
    ray = init_ray(address)
    at["step"] = "listing the inputs"
    listing = list_inputs(sources, max_file_bytes=recipe.decode.max_file_bytes,
                          work=_listing_dir(output), options=storage.options_from_env())
    log(f"discovered {listing.files} files -> {listing.units} sample groups, "
        f"{listing.rejects} rejected at discovery ({len(listing.parts)} listing tasks)")
    key = candidates_key(recipe, vocab.tokenizers, listing.digest())
    at["step"] = "decoding and tokenizing (each worker writes its parts)"
    parts, work = _candidates(recipe, listing, key, output, tokdir, roles, staging / "vocab.json", address, log)
    at.update(step="curating and writing the shards",
              need=diskspace.estimate_need(tokdir, parts, 2 if recipe.output.webdataset else 1))
    written = curate_and_write([str(p) for p in parts], recipe, staging,
                               cpus=ray.cluster_resources().get("CPU", 1), log=log)
    _maybe_kill("write")  # after the shards, before rejects, stats and manifest
    rejects = write_rejects(listing.reject_paths() + written.rejects, staging / "rejects.parquet")
    shutil.rmtree(written.scratch, ignore_errors=True)
    save_candidates(staging, key, parts)
    (staging / CACHE_DIR / "timings.json").write_text(json.dumps(written.timings, indent=1, sort_keys=True) + "\n")
    shards = sorted(written.shards, key=lambda e: (e["format"], e["split"] != "train", e["path"]))
    stats = build_stats(listing.inputs(), rejects, written.shard_stats)
    stats["curate"] = written.report
    (staging / "stats.json").write_text(json.dumps(stats, indent=1, sort_keys=True) + "\n")
    _write_token_shares(staging / "token_shares.csv", written.report.get("mixture", {}))
    manifest = build_manifest(recipe, vocab, shards, stats, written.mixture)
    dd = written.report["dedup"]
    build_digest(staging, [str(p) for p in parts], shards, dd["rows"] + sum(written.report["filters"]["dropped"].values()))
    (staging / "manifest.json").write_text(json.dumps(manifest, indent=1, sort_keys=True) + "\n")
    at["step"] = "writing the report"
    try:  # the report is part of the same atomic swap; a report bug must not lose the shards
        if report:  # off with `run --no-report` (the DVC `report` stage builds it once, with the full eval)
            build_report(staging)
    except Exception as e:
        if diskspace.is_disk_full(e):
            raise
        log(f"report not written ({type(e).__name__}: {e}); `dataengine report {output}` retries it")
    at["step"] = "moving OUT into place"
    _swap_into_place(staging, output)
    if work is not None:
        work.remove()  # OUT/cache now holds the candidates
    listing.remove()
    return manifest, stats, shards


def _out_of_room(output: Path, staging: Path, at: dict) -> diskspace.DiskFullError:
    """Say what happened. The folders beside OUT are left as they are: Ray tasks of the failed
    step may still be writing there until this driver exits, and the next run empties staging,
    shuffle and listing before it starts and reuses the work folder's committed parts."""
    beside = [staging, shuffle_dir(staging), _listing_dir(output)]
    work = WorkDir.location(output)
    done = len(list((work / "parts").glob("part-*.parquet"))) if work.is_dir() else 0
    return diskspace.disk_full(output.parent, diskspace.tree_bytes(*beside, work), at["need"], at["step"], done)


def local_output(recipe: Recipe, output) -> Path:
    """Where OUT is written: the folder itself, or for an s3:// (any remote) OUT its local mirror."""
    if storage.is_remote(output):
        return publish.mirror_path(output, recipe.resolve(recipe.execution.work_dir) if recipe.execution.work_dir else "")
    return Path(storage.local_path(output)).resolve()


def list_inputs(sources, **kw) -> Listing:
    """The listing as Ray tasks (a seam: the hostile test changes files right after it)."""
    return run_listing(sources, **kw)


def _candidates(recipe: Recipe, listing: Listing, key: str, output: Path, tokdir: Path, roles: list[str], vocab_path: Path,
                address, log) -> tuple[list[Path], WorkDir | None]:
    """Every unit decoded and tokenized, as parts: from OUT's cache, else resumed from the work folder, else on Ray."""
    parts = load_candidates(output, key)
    if parts is not None:
        log(f"reusing {len(parts)} parts of decoded and tokenized candidates from {output / CACHE_DIR} "
            "(inputs, decode, tokenizers and compose settings unchanged)")
        return parts, None
    work = WorkDir(output, key)
    run_items(recipe, listing, work, tokdir, roles, vocab_path, address, log)
    return work.part_paths(), work


def _listing_dir(output: Path) -> Path:
    return output.parent / f".{output.name}.listing"


def _copy_tokenizers(tokdir: Path, roles: list[str], dest: Path) -> None:
    """OUT carries its tokenizers (cards + weights), so `inspect --decode` needs nothing else."""
    for role in roles:
        shutil.copytree(tokdir / role, dest / role)


def _write_token_shares(path: Path, mixture: dict) -> None:
    """The mixture's train tokens per source/kind as CSV (a DVC plot): available, target, achieved."""
    cols = ["available_tokens", "target_tokens", "achieved_tokens", "target_share", "achieved_share", "epochs"]
    groups = mixture.get("groups") or {}
    total = sum(g["available_tokens"] for g in groups.values()) or 1
    lines = ["group," + ",".join(cols[:3]) + ",available_share," + ",".join(cols[3:])]
    for name, g in sorted(groups.items()):
        values = [g[c] for c in cols[:3]] + [round(g["available_tokens"] / total, 6)] + [g[c] for c in cols[3:]]
        lines.append(name + "," + ",".join(f"{v:.6g}" if isinstance(v, float) else str(v) for v in values))
    path.write_text("\n".join(lines) + "\n")


def _maybe_kill(point: str) -> None:
    """Fault injection for the resume tests: `DATAENGINE_KILL_AT=write` SIGKILLs the driver there."""
    if os.environ.get("DATAENGINE_KILL_AT") == point:
        os.kill(os.getpid(), signal.SIGKILL)


def _swap_into_place(staging: Path, output: Path) -> None:
    old = output.parent / f".{output.name}.old"
    shutil.rmtree(old, ignore_errors=True)
    if output.exists():
        output.rename(old)
    staging.rename(output)
    shutil.rmtree(old, ignore_errors=True)
