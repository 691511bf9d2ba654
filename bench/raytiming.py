"""Where the time goes in a `dataengine run`: driver-side spans and Ray-side per-call timings.

`profiled(run_module, ...)` patches the names `dataengine.pipeline.run` looks up
at call time (list_inputs, run_items, curate_and_write, ...) with timed wrappers;
`run_items` is also handed a `progress` callback that notes when each work item's
summary reaches the driver (its part is committed), and `curate_and_write` keeps
its `Written.timings` (seconds per curation phase).

Inside the Ray workers, `install_worker_hook` (Ray's `worker_process_setup_hook`,
set by `ray_init_kwargs`) swaps `dataengine.pipeline.trace.TracedDecode` /
`TracedTokenizeStage` (which `ItemWorker.__init__` imports when the actor starts)
for subclasses that append one JSON line per call to
``$DATAENGINE_BENCH_TIMING/<stage>-<pid>.jsonl``, and wraps
`ItemWorker.__call__` and `items.write_part` the same way (one line per work
item: the whole item, and its part write). The workers import this module, so
the bench folder must be on their PYTHONPATH (`worker_env`) before Ray starts.
Nothing here changes what the pipeline computes.
"""
from __future__ import annotations

import contextlib
import json
import os
import time
from pathlib import Path

from dataengine.pipeline.trace import TracedDecode, TracedTokenizeStage

TIMING_ENV = "DATAENGINE_BENCH_TIMING"
ITEMS = "decode + tokenize (Ray work items)"

# run.py's module-level names -> the profile's stage they belong to
DRIVER_SPANS = {
    "ensure_tokenizers": "setup (tokenizers, vocab)", "load_tokenizers": "setup (tokenizers, vocab)",
    "_copy_tokenizers": "setup (tokenizers, vocab)", "list_inputs": "listing (Ray tasks)",
    "run_items": ITEMS, "curate_and_write": "curate + write shards (Ray tasks)",
    "write_rejects": "rejects (Ray task)", "save_candidates": "candidates cache",
    "build_stats": "stats + manifest", "build_manifest": "stats + manifest", "build_report": "report",
    "_swap_into_place": "swap into place",
}


def worker_env(bench_dir: Path, timing_dir: Path) -> None:
    """Environment that a local Ray started after this call hands to its workers."""
    paths = [str(bench_dir)] + [p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p]
    os.environ["PYTHONPATH"] = os.pathsep.join(dict.fromkeys(paths))
    timing_dir.mkdir(parents=True, exist_ok=True)
    os.environ[TIMING_ENV] = str(timing_dir)


def ray_init_kwargs() -> dict:
    """`ray.init` arguments that install the per-call timing in every worker process."""
    return {"runtime_env": {"worker_process_setup_hook": "raytiming.install_worker_hook"}}


def _note(stage: str, record: dict) -> None:
    folder = os.environ.get(TIMING_ENV)
    if folder:
        with open(Path(folder) / f"{stage}-{os.getpid()}.jsonl", "a") as f:
            f.write(json.dumps(record) + "\n")


class TimedDecode(TracedDecode):
    def __call__(self, batch, **kwargs):
        t0 = time.time()
        out = super().__call__(batch, **kwargs)
        _note("decode", {"t0": t0, "t1": time.time(), "rows_in": batch.num_rows, "rows_out": out.num_rows})
        return out


class TimedTokenizeStage(TracedTokenizeStage):
    def __init__(self, *args, **kwargs):
        t0 = time.time()
        super().__init__(*args, **kwargs)
        _note("tokenize_init", {"t0": t0, "t1": time.time()})

    def __call__(self, batch, **kwargs):
        t0 = time.time()
        out = super().__call__(batch, **kwargs)
        _note("tokenize", {"t0": t0, "t1": time.time(), "rows_in": batch.num_rows, "rows_out": out.num_rows})
        return out


def install_worker_hook() -> None:
    """Run by Ray in each worker process at start-up (before any actor is built there)."""
    if not os.environ.get(TIMING_ENV):
        return
    from dataengine.pipeline import items, trace

    trace.TracedDecode, trace.TracedTokenizeStage = TimedDecode, TimedTokenizeStage
    if getattr(items.ItemWorker.__call__, "_timed", False):
        return
    inner_call, inner_write = items.ItemWorker.__call__, items.write_part

    def call(self, batch):
        t0 = time.time()
        out = inner_call(self, batch)
        _note("item", {"t0": t0, "t1": time.time(), "rows_in": sum(out.column("units").to_pylist()),
                       "rows_out": sum(out.column("rows").to_pylist())})
        return out

    def write_part(table, path):
        t0 = time.time()
        inner_write(table, path)
        _note("write_part", {"t0": t0, "t1": time.time(), "rows_in": table.num_rows, "rows_out": table.num_rows,
                             "bytes": Path(path).stat().st_size})

    call._timed = True
    items.ItemWorker.__call__ = call
    items.write_part = write_part  # ItemWorker.__call__ looks it up at call time


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
    `run_items`), and the share of `cpus` x window that the work items kept busy."""
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
        # a work item = decode + tokenize + compose + its part write; without the item hook, decode + tokenize
        work = out["item"]["busy_in_window_s"] if "item" in out else \
            sum(out[s]["busy_in_window_s"] for s in ("decode", "tokenize") if s in out)
        out["cpu_utilization_in_window"] = round(work / max(span * cpus, 1e-9), 3)
    return out


@contextlib.contextmanager
def profiled(run_module, stopwatch, arrivals: list, marks: dict):
    """Patch `run_module` so each named call is timed into `stopwatch`, and every work item's summary is
    noted in `arrivals` as (time, rows, ok_rows, units, item) when it reaches the driver;
    `marks["execute_start"]` is when `run_items` began, `marks["curate_timings"]` the `Written.timings`.
    Restores everything on exit."""
    saved = {}

    def wrap(fn, span):
        def timed(*args, **kwargs):
            with stopwatch(span):
                return fn(*args, **kwargs)
        return timed

    for name, span in DRIVER_SPANS.items():
        fn = getattr(run_module, name, None)
        if fn is not None:
            saved[name] = fn
            run_module.__dict__[name] = wrap(fn, span)
    inner_items = saved.get("run_items")
    if inner_items is not None:
        def run_items(*args, progress=None, **kw):
            def noting(summary):
                arrivals.append((time.time(), summary["rows"], summary["ok"], summary["units"], summary["item"]))
                if progress is not None:
                    progress(summary)
            marks["execute_start"] = time.time()
            with stopwatch(ITEMS):
                return inner_items(*args, progress=noting, **kw)
        run_module.__dict__["run_items"] = run_items
    inner_curate = saved.get("curate_and_write")
    if inner_curate is not None:
        def curate_and_write(*args, **kw):
            with stopwatch(DRIVER_SPANS["curate_and_write"]):
                written = inner_curate(*args, **kw)
            marks["curate_timings"] = dict(written.timings)
            return written
        run_module.__dict__["curate_and_write"] = curate_and_write
    try:
        yield
    finally:
        run_module.__dict__.update(saved)
