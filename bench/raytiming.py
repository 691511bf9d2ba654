"""Where the time goes in a `dataengine run`: driver-side spans and Ray-side per-batch timings.

`profiled(run_module)` patches the names `dataengine.pipeline.run` looks up at
call time (discover, curate, write_split, ...) with timed wrappers, and swaps the
Ray stage classes for subclasses that append one JSON line per batch to
``$DATAENGINE_BENCH_TIMING/<stage>-<pid>.jsonl``. The Ray workers import this
module, so the bench folder must be on their PYTHONPATH (`worker_env`) before
Ray starts. Nothing here changes what the pipeline computes.
"""
from __future__ import annotations

import contextlib
import json
import os
import time
from pathlib import Path

from dataengine.pipeline.trace import TracedDecode, TracedTokenizeStage

TIMING_ENV = "DATAENGINE_BENCH_TIMING"

# run.py's module-level names -> the profile's stage they belong to
DRIVER_SPANS = {
    "ensure_tokenizers": "setup (tokenizers, vocab)", "load_tokenizers": "setup (tokenizers, vocab)",
    "_copy_tokenizers": "setup (tokenizers, vocab)", "discover": "discover",
    "_execute": "decode + tokenize (Ray, streaming)", "save_candidates": "candidates cache",
    "curate": "curate (filter, dedup, mixture)", "pack_table": "curate (filter, dedup, mixture)",
    "write_split": "write shards", "_rejects_table": "rejects", "build_stats": "stats + manifest",
    "build_manifest": "stats + manifest", "build_report": "report", "_swap_into_place": "swap into place",
}


def worker_env(bench_dir: Path, timing_dir: Path) -> None:
    """Environment that a local Ray started after this call hands to its workers."""
    paths = [str(bench_dir)] + [p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p]
    os.environ["PYTHONPATH"] = os.pathsep.join(dict.fromkeys(paths))
    timing_dir.mkdir(parents=True, exist_ok=True)
    os.environ[TIMING_ENV] = str(timing_dir)


def _note(stage: str, record: dict) -> None:
    folder = os.environ.get(TIMING_ENV)
    if folder:
        with open(Path(folder) / f"{stage}-{os.getpid()}.jsonl", "a") as f:
            f.write(json.dumps(record) + "\n")


class TimedDecode(TracedDecode):
    def __call__(self, batch):
        t0 = time.time()
        out = super().__call__(batch)
        _note("decode", {"t0": t0, "t1": time.time(), "rows_in": batch.num_rows, "rows_out": out.num_rows})
        return out


class TimedTokenizeStage(TracedTokenizeStage):
    def __init__(self, *args, **kwargs):
        t0 = time.time()
        super().__init__(*args, **kwargs)
        _note("tokenize_init", {"t0": t0, "t1": time.time()})

    def __call__(self, batch):
        t0 = time.time()
        out = super().__call__(batch)
        _note("tokenize", {"t0": t0, "t1": time.time(), "rows_in": batch.num_rows, "rows_out": out.num_rows})
        return out


def read_timings(folder: Path) -> dict[str, list[dict]]:
    out: dict[str, list[dict]] = {}
    for p in sorted(Path(folder).glob("*.jsonl")):
        stage, _, pid = p.stem.rpartition("-")
        for line in p.read_text().splitlines():
            out.setdefault(stage, []).append({**json.loads(line), "pid": int(pid)})
    return out


def summarize_ray(timings: dict[str, list[dict]], window: tuple[float, float] | None, cpus: float,
                  origin: float) -> dict:
    """Busy seconds per Ray stage, when each began and ended (seconds after `origin`, the start of
    `_execute`), and the share of `cpus` x window that decode and tokenize kept busy."""
    out: dict = {}
    for stage, recs in timings.items():
        busy = sum(r["t1"] - r["t0"] for r in recs)
        d = {"calls": len(recs), "processes": len({r["pid"] for r in recs}), "busy_s": round(busy, 2),
             "first_start_s": round(min(r["t0"] for r in recs) - origin, 2),
             "last_end_s": round(max(r["t1"] for r in recs) - origin, 2)}
        if recs and "rows_in" in recs[0]:
            d["rows_in"] = sum(r["rows_in"] for r in recs)
            d["mean_call_s"] = round(busy / len(recs), 4)
        if window:
            lo, hi = window
            d["busy_in_window_s"] = round(sum(max(0.0, min(r["t1"], hi) - max(r["t0"], lo)) for r in recs), 2)
        out[stage] = d
    if window:
        span = window[1] - window[0]
        work = sum(out[s]["busy_in_window_s"] for s in ("decode", "tokenize") if s in out)
        out["cpu_utilization_in_window"] = round(work / max(span * cpus, 1e-9), 3)
    return out


@contextlib.contextmanager
def profiled(run_module, stopwatch, sink_times: list, marks: dict):
    """Patch `run_module` so each named call is timed into `stopwatch`, and every result batch is noted
    in `sink_times` as (time, rows, ok_rows, unit_ids); `marks["execute_start"]` is when `_execute`
    began. Restores everything on exit."""
    saved = {}

    def wrap(name, fn, span):
        def timed(*args, **kwargs):
            with stopwatch(span):
                return fn(*args, **kwargs)
        return timed

    for name, span in DRIVER_SPANS.items():
        fn = getattr(run_module, name, None)
        if fn is not None:
            saved[name] = fn
            run_module.__dict__[name] = wrap(name, fn, span)
    inner_execute = saved.get("_execute")
    if inner_execute is not None:
        def execute(recipe, units, tokdir, roles, vocab_path, address, sink, *rest, **kw):
            def noting_sink(batch):
                ok = batch.column("status").to_pylist()
                sink_times.append((time.time(), batch.num_rows, sum(s == "ok" for s in ok),
                                   set(batch.column("unit_id").to_pylist())))
                sink(batch)
            marks["execute_start"] = time.time()
            with stopwatch(DRIVER_SPANS["_execute"]):
                return inner_execute(recipe, units, tokdir, roles, vocab_path, address, noting_sink, *rest, **kw)
        run_module.__dict__["_execute"] = execute
    for name, cls in (("TracedDecode", TimedDecode), ("TracedTokenizeStage", TimedTokenizeStage)):
        if hasattr(run_module, name):
            saved[name] = getattr(run_module, name)
            run_module.__dict__[name] = cls
    try:
        yield
    finally:
        run_module.__dict__.update(saved)
