"""Decode + tokenize as work items: each worker writes its own candidate part; the driver plans.

    unit parts of the listing (`dataengine.listing`) --plan_items--> items of `item_units` consecutive
      units (spans of the parts, in task order: the driver never sees a unit)
      --Ray Data, one tokenizer actor per CPU--> ItemWorker: decode (sub-batches of decode_batch)
         -> tokenize + compose (sub-batches of tokenize_batch) -> WORK/parts/part-<item>.parquet
      <-- one summary row per item (item, rows): all the driver sees

A part is written to a temporary name and renamed, so it is whole or absent, and
its bytes depend only on its units: a retried call (a worker killed mid-item),
another cluster size or a resumed run writes the same file. Resuming lists the
part files (O(items)) and sends only the missing items. Ray Data retries a call
whose actor died, and the crash ledger (`pipeline.isolation`) turns a unit that
kills its worker every time into a reject, so every item ends.

The item plan depends only on the listing (its task order and counts, `item_units_for`), never
on the cluster, so a run resumed on another cluster finds its parts.

Fault injection for the tests: `DATAENGINE_KILL_AFTER_PARTS=N` makes the driver
SIGKILL itself once N parts are reported committed; `DATAENGINE_FULL_AFTER_PARTS=N` makes
a worker's part write fail with ENOSPC once N parts are committed (a full disk where no
small filesystem can be mounted).
"""
from __future__ import annotations

import contextlib
import dataclasses
import errno
import json
import os
import shutil
import signal
import time
from pathlib import Path

import pyarrow as pa
import pyarrow.compute  # noqa: F401 (pa.compute in the workers)
import pyarrow.parquet as pq

from dataengine.pipeline.budget import Watchdog, WatchedDecode
from dataengine.pipeline.isolation import TOKENIZE_CRASH_ENV, maybe_crash
from dataengine.pipeline.ray_session import init_ray

KILL_AFTER_PARTS = "DATAENGINE_KILL_AFTER_PARTS"
FULL_AFTER_PARTS = "DATAENGINE_FULL_AFTER_PARTS"
TOKENIZE_STRAIN_ENV = "DATAENGINE_TOKENIZE_STRAIN_ON"  # tokenizing a matching input never returns
PARTS = "parts"
SUMMARY = pa.schema([("item", pa.int64()), ("units", pa.int64()), ("rows", pa.int64()), ("ok", pa.int64())])


def item_units_for(n_units: int, item_units: int) -> int:
    """Units per work item: the recipe's value, or (0) about 64 items, each of 8..1024 units."""
    if item_units > 0:
        return item_units
    return max(8, min(1024, -(-n_units // 64)))


def plan_items(parts: list[dict], item_units: int) -> list[tuple[int, list[list]]]:
    """[(item, [[unit part, start, stop], ...])]: consecutive units of the listing's parts, in order."""
    size = item_units_for(sum(p["units"] for p in parts), item_units)
    items, spans, need = [], [], size
    for p in parts:
        at = 0
        while at < p["units"]:
            take = min(need, p["units"] - at)
            spans.append([p["units_path"], at, at + take])
            at, need = at + take, need - take
            if need == 0:
                items.append(spans)
                spans, need = [], size
    if spans:
        items.append(spans)
    return list(enumerate(items))


def part_name(item: int) -> str:
    return f"part-{item:06d}.parquet"


class WorkDir:
    """`.OUT.work/` beside OUT: the key of the candidates it holds, and their parts."""

    def __init__(self, output: Path, key: str):
        self.dir = self.location(output)
        self.parts = self.dir / PARTS
        key_file = self.dir / "key.json"
        try:
            same = json.loads(key_file.read_text()).get("key") == key
        except (OSError, ValueError):
            same = False
        if not same:  # other inputs or settings: nothing in it can be reused
            shutil.rmtree(self.dir, ignore_errors=True)
            self.parts.mkdir(parents=True)
            key_file.write_text(json.dumps({"key": key}) + "\n")

    @staticmethod
    def location(output: Path) -> Path:
        return Path(output).parent / f".{Path(output).name}.work"

    def done(self) -> set[int]:
        """Items whose part is committed (a listing: O(items), no part is read)."""
        return {int(p.name[5:11]) for p in self.parts.glob("part-*.parquet")}

    def part_paths(self) -> list[Path]:
        return sorted(self.parts.glob("part-*.parquet"))

    def remove(self) -> None:
        shutil.rmtree(self.dir, ignore_errors=True)


def write_part(table: pa.Table, path: Path) -> None:
    """Whole or absent: a temporary name per writer, then an atomic rename (a retry writes the same bytes)."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        full_after = os.environ.get(FULL_AFTER_PARTS)
        if full_after and len(list(path.parent.glob("part-*.parquet"))) >= int(full_after):
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(tmp))
        pq.write_table(table, tmp, compression="zstd", compression_level=1, row_group_size=4096)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)  # a full disk must not keep the half-written file
        raise


class ItemWorker:
    """Ray actor: decode, tokenize and compose one work item's units, then commit its part."""

    def __init__(self, decode, tokenize_kwargs: dict, parts_dir: str, decode_batch: int, tokenize_batch: int,
                 max_crashes: int = 2):
        from dataengine.pipeline.trace import TracedDecode, TracedTokenizeStage

        self.decode = TracedDecode(decode)
        # each unit decoded in a watched child process, within decode.budget (pipeline.budget)
        self.watched = WatchedDecode(decode, max_crashes) if decode.decode.budget.watch else None
        # and tokenizing within the same budgets, watched in this process (a kill is pinned by the ledger)
        self.watchdog = Watchdog(decode.decode.budget, self._blame) if decode.decode.budget.watch else None
        self._now: tuple | None = None  # (guard, unit_id) being tokenized, for the watchdog
        self.tokenize = TracedTokenizeStage(**tokenize_kwargs)
        self.parts = Path(parts_dir)
        self.decode_batch, self.tokenize_batch = decode_batch, tokenize_batch
        self.crash_on = os.environ.get(TOKENIZE_CRASH_ENV)  # fault injection (pipeline.isolation)
        self.strain_on = os.environ.get(TOKENIZE_STRAIN_ENV)

    def _blame(self, reason: str) -> None:
        """The watchdog is about to kill this worker: a careful attempt tells the ledger which budget."""
        now = self._now
        if now is not None and now[0].careful:
            now[0].started(now[1], f"tokenize:{reason}")

    def _maybe_crash(self, rows: pa.Table) -> None:
        """Fault injection: die while tokenizing a decoded row of a matching input (`DATAENGINE_TOKENIZE_CRASH_ON`)."""
        if self.crash_on or self.strain_on:
            for status, path in zip(rows.column("status").to_pylist(), rows.column("path").to_pylist()):
                if status == "ok":
                    maybe_crash(path, TOKENIZE_CRASH_ENV)
                    if self.strain_on and self.strain_on in path:
                        time.sleep(3600)  # a tokenizer that never returns: the watchdog's case

    def __call__(self, batch: pa.Table) -> pa.Table:
        from dataengine.listing import read_units
        from dataengine.pipeline.decode_stage import DECODED_SCHEMA
        from dataengine.pipeline.isolation import UnitGuard
        from dataengine.pipeline.tokenize_stage import RESULT_SCHEMA

        out = []
        for item, spans in zip(batch.column("item").to_pylist(), batch.column("spans").to_pylist()):
            units = read_units(json.loads(spans))
            # one crash-ledger round trip per item (not per batch): it stays off the hot path on a big cluster
            guard = UnitGuard(self.decode.fn.ledger, units.column("unit_id").to_pylist())
            results = []
            for s in range(0, units.num_rows, self.decode_batch):
                decoded = self.decode(units.slice(s, self.decode_batch), guard=guard,
                                      run_unit=self.watched).cast(DECODED_SCHEMA)
                guard.paused()  # decoded: a crash before the next report is no unit's
                step = 1 if guard.careful else self.tokenize_batch  # careful: a crash is pinned on one unit
                for t in range(0, decoded.num_rows, step):
                    rows = decoded.slice(t, step)
                    uid = rows.column("unit_id")[0].as_py()
                    if guard.careful:
                        guard.started(uid, "tokenize")
                    self._now = (guard, uid)
                    with self.watchdog.watch() if self.watchdog else contextlib.nullcontext():
                        self._maybe_crash(rows)
                        results.append(self.tokenize(rows))
                    self._now = None
                guard.paused()
            guard.finished()
            table = pa.concat_tables(results).cast(RESULT_SCHEMA) if results else RESULT_SCHEMA.empty_table()
            write_part(table, self.parts / part_name(item))
            ok = int(pa.compute.sum(pa.compute.equal(table.column("status"), "ok").cast(pa.int64())).as_py() or 0)
            out.append({"item": item, "units": units.num_rows, "rows": table.num_rows, "ok": ok})
        return pa.Table.from_pylist(out, schema=SUMMARY)


def run_items(recipe, listing, work: WorkDir, tokdir: Path, roles: list[str], vocab_path: Path,
              address, log, progress=None) -> None:
    """Decode and tokenize every unit of `listing` whose item has no part yet; workers write the parts.

    `progress(summary)`, when given, sees each item's summary (item, units, rows, ok) as it is committed."""
    items = plan_items(listing.parts, recipe.execution.item_units)
    count = lambda spans: sum(b - a for _, a, b in spans)  # noqa: E731
    done = work.done()
    todo = [(i, spans) for i, spans in items if i not in done]
    if done:
        log(f"resuming: {len(items) - len(todo)} of {len(items)} work items ({sum(count(s) for i, s in items if i in done)}"
            f" of {listing.units} sample groups) were already decoded and tokenized by an interrupted run ({work.dir})")
    if not todo:
        return

    ray = init_ray(address)
    from ray.data import ActorPoolStrategy

    from dataengine.errors import RecipeError
    from dataengine.pipeline.isolation import RunLedger
    from dataengine.pipeline.decode_stage import decode_stage_for

    ex = recipe.execution
    resources = ray.cluster_resources()
    cpus, gpus = resources.get("CPU", 0), resources.get("GPU", 0)
    if cpus < ex.tokenize_num_cpus:
        raise RecipeError(f"the Ray cluster has {cpus:g} CPUs but execution.tokenize_num_cpus = "
                          f"{ex.tokenize_num_cpus:g}; lower it (fractions such as 0.5 are fine)")
    # one actor per tokenize_num_cpus CPUs, all up front (growing mid-run waits on model loading); decode runs
    # inside them, so they are all the compute there is. A GPU is shared by the actors (fractional num_gpus).
    n = ex.tokenize_actors or max(1, int(cpus // ex.tokenize_num_cpus))
    n = max(1, min(n, len(todo)))
    pool = ActorPoolStrategy(min_size=n, max_size=n)
    ledger = RunLedger(ex.max_unit_crashes)  # a sample that kills its worker: a reject, not endless retries
    decode = dataclasses.replace(decode_stage_for(recipe), ledger=ledger.name)
    kwargs = {"tokenizers_dir": str(tokdir), "roles": roles, "vocab_path": str(vocab_path),
              "compose": dataclasses.asdict(recipe.compose), "seed": recipe.seed,
              "token_recon": recipe.curate.token_recon}
    ray.data.DataContext.get_current().wait_for_min_actors_s = 600  # every actor up before blocks are handed out
    rows = [{"item": i, "spans": json.dumps(spans)} for i, spans in todo]
    ds = ray.data.from_items(rows, override_num_blocks=len(rows))
    ds = ds.map_batches(ItemWorker, fn_constructor_kwargs={
        "decode": decode, "tokenize_kwargs": kwargs, "parts_dir": str(work.parts),
        "decode_batch": ex.decode_batch, "tokenize_batch": ex.tokenize_batch, "max_crashes": ex.max_unit_crashes},
        batch_size=1, batch_format="pyarrow", compute=pool, num_cpus=ex.tokenize_num_cpus,
        num_gpus=(min(1.0, gpus / n) if gpus >= 1 else 0))  # never ask for a GPU that is not there
    limit = int(os.environ.get(KILL_AFTER_PARTS) or 0)
    committed = 0
    try:
        for summary in ds.iter_rows():
            if progress is not None:
                progress(summary)
            committed += 1
            if limit and committed >= limit:
                os.kill(os.getpid(), signal.SIGKILL)
    finally:
        ledger.close()
    missing = sorted(i for i, _ in items if i not in work.done())
    if missing:  # every item writes a part (rejects included): a gap is a bug, never ignored
        raise RuntimeError(f"{len(missing)} work items wrote no part (first: {missing[:5]}); rerun to retry them")
