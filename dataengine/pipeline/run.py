"""`dataengine run`: compile a recipe into a Ray Data pipeline and write the outputs.

    discover (driver) -> decode + stats (Ray tasks) -> tokenize + compose (Ray actor pool)
      -> candidates (cached in OUT/cache) -> curate: filter, dedup, split, mixture (driver)
      -> sort by id, write shards (driver) -> rejects, stats, manifest

Everything is written to a staging folder beside OUT and moved into place at
the end, so a reader never sees a half-written OUT. The same code runs on a
local Ray (started here) and on a cluster (`--address` or `ray job submit`).
"""
from __future__ import annotations

import dataclasses
import json
import os
import shutil
import signal
import sys
import time
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from dataengine.compose.pack import pack_table
from dataengine.curate.apply import curate
from dataengine.discover import discover
from dataengine.errors import RecipeError
from dataengine.pipeline.checkpoint import WorkDir
from dataengine.pipeline.cache import CACHE_DIR, candidates_key, load_candidates, save_candidates
from dataengine.pipeline.tokenize_stage import load_tokenizers
from dataengine.pipeline.trace import TracedDecode, TracedTokenizeStage
from dataengine.recipe import Recipe
from dataengine.report.build import build_report
from dataengine.shards.manifest import build_manifest, build_stats
from dataengine.shards.schema import REJECT_SCHEMA, SEQUENCE_SCHEMA
from dataengine.shards.writer import write_split
from dataengine.tokenize.fit import decode_stage_for, ensure_tokenizers
from dataengine.vocab import Vocab


def init_ray(address: str | None = None, num_cpus: int | None = None):
    """Connect to `address`, or start a local Ray; reuse one that is already up."""
    import ray

    if not ray.is_initialized():
        kwargs = dict(include_dashboard=False, logging_level="WARNING", log_to_driver=False,
                      ignore_reinit_error=True)
        if address and address != "local":
            ray.init(address=address, **kwargs)
        else:  # "local" starts a fresh Ray even when `ray start` left a cluster address behind
            ray.init(address=address, num_cpus=num_cpus, **kwargs)
    ctx = ray.data.DataContext.get_current()
    from dataengine.progress import progress_enabled  # one rule for every bar: DATAENGINE_PROGRESS, CI, tty

    quiet = not progress_enabled(sys.stderr)
    ctx.enable_progress_bars = not quiet
    ctx.print_on_execution_start = False
    return ray


def run_pipeline(recipe: Recipe, output: Path, *, tokenizers_dir: Path | None = None,
                 address: str | None = None, log=print, report: bool = True) -> dict:
    """Run `recipe` and write OUT; returns the manifest. `report=False` skips OUT/report.html."""
    t0 = time.time()
    output = Path(output).resolve()
    sources = [(s.name, recipe.resolve(s.path)) for s in recipe.sources]
    missing = [str(p) for _, p in sources if not p.is_dir()]
    if missing:
        raise RecipeError(f"input folder(s) not found: {missing}; pass existing folders with --input")
    tokdir = Path(tokenizers_dir) if tokenizers_dir else recipe.resolve(recipe.tokenizers_dir)
    ensure_tokenizers(recipe, tokdir, log=log)
    roles = sorted(recipe.tokenizers)
    vocab = Vocab.build(load_tokenizers(tokdir, roles))

    staging = output.parent / f".{output.name}.staging"  # a killed run's staging is stale: start it again
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir(parents=True)
    vocab.save(staging / "vocab.json")
    _copy_tokenizers(tokdir, roles, staging / "tokenizers")

    found = discover(sources, max_file_bytes=recipe.decode.max_file_bytes)
    log(f"discovered {len(found.files)} files -> {len(found.units)} sample groups, "
        f"{len(found.rejects)} rejected at discovery")
    key = candidates_key(recipe, vocab.tokenizers, found)
    results, work = _candidates(recipe, found, key, output, tokdir, roles, staging / "vocab.json", address, log)
    results = results.sort_by([("unit_id", "ascending"), ("id", "ascending"), ("path", "ascending")])
    save_candidates(staging, key, results)

    ok = results.filter(pc.equal(results.column("status"), "ok"))
    rejected = results.filter(pc.equal(results.column("status"), "reject"))
    cur = curate(ok, recipe)
    shards = []
    for split in ("train", "val"):
        part = cur.sequences.filter(pc.equal(cur.sequences.column("split"), split))
        part = part.sort_by([("id", "ascending")])
        if recipe.compose.pack_length > 0:  # short sequences packed to the length, documents recorded
            part = pack_table(part, recipe.compose.pack_length).cast(SEQUENCE_SCHEMA).sort_by([("id", "ascending")])
        shards += write_split(part, split, staging, shard_rows=recipe.output.shard_rows,
                              compression=recipe.output.parquet_compression, webdataset=recipe.output.webdataset)
        _maybe_kill("write")  # after the train shards, before the val shards
    rejects = _rejects_table(found.rejects, rejected, ok, cur.drops)
    pq.write_table(rejects, staging / "rejects.parquet", compression="zstd")

    stats = build_stats(staging, vocab, found, shards)
    stats["curate"] = cur.report
    (staging / "stats.json").write_text(json.dumps(stats, indent=1, sort_keys=True) + "\n")
    _write_token_shares(staging / "token_shares.csv", cur.report.get("mixture", {}))
    manifest = build_manifest(recipe, vocab, shards, stats)
    (staging / "manifest.json").write_text(json.dumps(manifest, indent=1, sort_keys=True) + "\n")
    try:  # the report is part of the same atomic swap; a report bug must not lose the shards
        if report:  # off with `run --no-report` (the DVC `report` stage builds it once, with the full eval)
            build_report(staging)
    except Exception as e:
        log(f"report not written ({type(e).__name__}: {e}); `dataengine report {output}` retries it")
    _swap_into_place(staging, output)
    if work is not None:
        work.remove()  # OUT/cache now holds the candidates
    log(f"wrote {stats['sequences']['total']} sequences ({stats['tokens']['total']} tokens) in "
        f"{len([s for s in shards if s['format'] == 'parquet'])} parquet shards, "
        f"{stats['rejects']['total']} rejects, in {time.time() - t0:.1f}s")
    return manifest


def _candidates(recipe: Recipe, found, key: str, output: Path, tokdir: Path, roles: list[str], vocab_path: Path,
                address, log) -> tuple[pa.Table, WorkDir | None]:
    """Every unit decoded and tokenized: from OUT's cache, else resumed from the work folder, else on Ray."""
    from dataengine.pipeline.tokenize_stage import RESULT_SCHEMA

    results = load_candidates(output, key, RESULT_SCHEMA)
    if results is not None:
        log(f"reusing {results.num_rows} decoded and tokenized candidates from {output / CACHE_DIR} "
            "(inputs, decode, tokenizers and compose settings unchanged)")
        return results, None
    work = WorkDir(output, key, RESULT_SCHEMA, flush_rows=recipe.execution.checkpoint_rows)
    done_units = set(work.completed().column("unit_id").to_pylist())
    todo = [u for u in found.units if u.unit_id not in done_units]
    if done_units:
        log(f"resuming: {len(found.units) - len(todo)} of {len(found.units)} sample groups were already "
            f"decoded and tokenized by an interrupted run ({work.dir})")
    _execute(recipe, todo, tokdir, roles, vocab_path, address, work.add)
    work.flush()
    results = work.completed()
    lost = {u.unit_id for u in found.units} - set(results.column("unit_id").to_pylist())
    if lost:  # every unit yields at least one row (an item or a reject): a gap is a bug, never ignored
        raise RuntimeError(f"{len(lost)} sample groups produced no result rows; rerun to retry them")
    return results, work


def _execute(recipe: Recipe, units: list, tokdir: Path, roles: list[str], vocab_path: Path, address,
             sink) -> None:
    """Decode and tokenize `units` on Ray; every result batch goes to `sink` as it arrives (streaming)."""
    if not units:
        return
    ray = init_ray(address)
    from ray.data import ActorPoolStrategy

    from dataengine.pipeline.isolation import RunLedger

    ex = recipe.execution
    resources = ray.cluster_resources()
    gpu = 1 if resources.get("GPU", 0) >= 1 else 0  # never ask for a GPU that is not there
    need = ex.decode_num_cpus + ex.tokenize_num_cpus
    if resources.get("CPU", 0) < need:  # otherwise the actor pool and the decode tasks wait on each other forever
        raise RecipeError(
            f"the Ray cluster has {resources.get('CPU', 0):g} CPUs but execution.decode_num_cpus + "
            f"execution.tokenize_num_cpus = {need:g}; lower them (fractions such as 0.5 are fine)")
    units = [u.to_row() for u in units]
    # One Ray task per block. ~8 decode batches per block keep the per-task overhead (scheduling, ~0.05-0.1 s,
    # as long as an 8-unit batch) small; but at least 4 blocks per CPU, when there are units enough, fill the cores.
    cpus = resources.get("CPU", 1)
    blocks = max(1, min(-(-len(units) // (8 * ex.decode_batch)), 1024),
                 min(len(units) // ex.decode_batch, int(4 * cpus)))
    if ex.tokenize_actors > 0:
        pool = ActorPoolStrategy(min_size=ex.tokenize_min_actors, max_size=ex.tokenize_actors)
    else:  # auto: one actor per GPU, else per tokenize_num_cpus CPUs (less room for unfused decode tasks)
        spare = 0.0 if ex.decode_num_cpus == ex.tokenize_num_cpus else ex.decode_num_cpus
        n = max(1, int(resources.get("GPU", 1)) if gpu else int((cpus - spare) // ex.tokenize_num_cpus))
        pool = ActorPoolStrategy(min_size=n, max_size=n)  # all up front: growing mid-run waits on model loading
    ledger = RunLedger(ex.max_unit_crashes)  # a sample that kills its worker: a reject, not endless retries
    decode = dataclasses.replace(decode_stage_for(recipe), ledger=ledger.name)
    # every actor of the pool up (tokenizers loaded) before the first block is handed out: otherwise the
    # first actor ready (the driver's node) takes all of a small run, and later actors idle behind model loading
    ray.data.DataContext.get_current().wait_for_min_actors_s = 600
    ds = ray.data.from_items(units, override_num_blocks=blocks)
    # no max_retries here: any remote arg stops Ray Data fusing decode into the tokenize actors; its default
    # (retry until done) is safe because the ledger rejects a sample that keeps killing its worker
    ds = ds.map_batches(TracedDecode(decode), batch_size=ex.decode_batch, batch_format="pyarrow",
                        num_cpus=ex.decode_num_cpus)
    ds = ds.map_batches(
        TracedTokenizeStage,
        fn_constructor_kwargs={"tokenizers_dir": str(tokdir), "roles": roles, "vocab_path": str(vocab_path),
                               "compose": dataclasses.asdict(recipe.compose), "seed": recipe.seed,
                               "token_recon": recipe.curate.token_recon},
        batch_size=ex.tokenize_batch, batch_format="pyarrow",
        compute=pool,
        num_cpus=ex.tokenize_num_cpus, num_gpus=gpu,
    )
    try:
        for batch in ds.iter_batches(batch_format="pyarrow", batch_size=None):
            sink(batch)
    finally:
        ledger.close()


def _rejects_table(discover_rejects: list[dict], rejected: pa.Table, ok: pa.Table, drops) -> pa.Table:
    """Discovery, decode and tokenize rejects, plus the candidates curation dropped (filter, dedup, mixture)."""
    rows = list(discover_rejects) + rejected.select(REJECT_SCHEMA.names).to_pylist()
    if drops.height:  # a dropped item takes its caption and sidecar with it, as a decode reject does
        where = {i: (src, path, lin) for i, src, path, lin in zip(
            ok.column("id").to_pylist(), ok.column("source").to_pylist(), ok.column("path").to_pylist(),
            ok.column("lineage").to_pylist())}
        for d in drops.iter_rows(named=True):
            source, path, lineage = where[d["id"]]
            rows.append({"source": source, "path": path, "stage": d["stage"], "reason": d["reason"],
                         "detail": d["detail"]})
            for lin in lineage:
                if lin["path"] != path:
                    rows.append({"source": source, "path": lin["path"], "stage": d["stage"],
                                 "reason": "media_dropped", "detail": f"its media {path} was dropped ({d['reason']})"})
    rows.sort(key=lambda r: (r["source"], r["path"], r["stage"], r["reason"]))
    return pa.Table.from_pylist(rows, schema=REJECT_SCHEMA)


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
