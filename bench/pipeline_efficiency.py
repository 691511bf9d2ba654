"""Pipeline efficiency: `dataengine run` throughput over its own ideal, and where the time goes.

    .venv/bin/python bench/pipeline_efficiency.py --copies 8

Corpus: the demo corpus (``dataengine demo-corpus``, ~4 MB) replicated ``--copies``
times under distinct paths (hard links; see `benchlib.replicated_corpus`). Every
copy is decoded and tokenized again (distinct unit ids); curation then drops the
exact copies as duplicates, so the shards hold about one copy.

Measured, side by side in one process:

- **ideal**: the same work in a tight single-process loop: the engine's own
  `ItemWorker` (decode in sub-batches of ``execution.decode_batch`` units, then
  stats + tokenize + compose in sub-batches of ``execution.tokenize_batch``, token
  recon included as the recipe asks, and the part write), called here on the work
  items of ONE copy (cut as the run cuts them: `items.item_units_for` over all the
  units); the others are the same work. Model loading is outside the timing. It
  runs before and after the pipeline; the mean rate is used, both are recorded
  (load drift shows there).
- **pipeline**: `run_pipeline` (the real `dataengine run`) on a local Ray started
  first (start-up excluded). Steady-state throughput is the rows of every work
  item committed after the first over the time from the first commit to the last
  (commit = its summary reaching the driver: `run_items(progress=...)`).

Efficiency = pipeline steady-state rate / (ideal rate x the Ray cluster's CPUs).
Target >= 0.8. The JSON also has the end-to-end rate (whole `run_items`, actor
start-up and drain included, and the whole run less Ray start) and a profile:
driver-side seconds per stage, curation's own phase timings (`Written.timings`),
and the Ray side's busy seconds per stage (per decode / tokenize call, per work
item and per part write, from the workers: `raytiming.install_worker_hook`).
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import shutil
import sys
import tempfile
import time
from pathlib import Path

import pyarrow as pa

import benchlib
import raytiming
from benchlib import Stopwatch, log

TARGET = 0.8


def unit_bytes(unit) -> int:
    return sum(int(v[0]) for v in json.loads(unit.stamps or "{}").values())


def ideal(recipe, units: list, tokdir: Path, vocab_path: Path, item_units: int) -> dict:
    """`ItemWorker` over `units` in this process, in work items of `item_units` units (as the run cuts them)."""
    from dataengine.pipeline.items import ItemWorker
    from dataengine.pipeline.decode_stage import decode_stage_for

    ex = recipe.execution
    kwargs = {"tokenizers_dir": str(tokdir), "roles": sorted(recipe.tokenizers), "vocab_path": str(vocab_path),
              "compose": dataclasses.asdict(recipe.compose), "seed": recipe.seed,
              "token_recon": recipe.curate.token_recon}
    units = sorted(units, key=lambda u: u.unit_id)
    with tempfile.TemporaryDirectory() as parts:
        worker = ItemWorker(decode_stage_for(recipe), kwargs, parts, ex.decode_batch, ex.tokenize_batch)
        spent = {"decode": 0.0, "tokenize": 0.0}
        worker.decode, worker.tokenize = _Timed(worker.decode, "decode", spent), _Timed(worker.tokenize, "tokenize", spent)
        out_rows = ok_rows = 0
        t0 = time.perf_counter()
        from dataengine.listing import UNIT_SCHEMA
        from dataengine.spans import write_table

        listed = Path(parts) / "units.parquet"  # as the listing tasks write them; items are spans of it
        write_table(pa.Table.from_pylist([u.to_row() for u in units], schema=UNIT_SCHEMA), listed)
        for i, s in enumerate(range(0, len(units), item_units)):
            spans = [[str(listed), s, min(s + item_units, len(units))]]
            summary = worker(pa.table({"item": [i], "spans": [json.dumps(spans)]})).to_pylist()[0]
            out_rows += summary["rows"]
            ok_rows += summary["ok"]
        total = time.perf_counter() - t0
    nbytes = sum(unit_bytes(u) for u in units)
    return {"units": len(units), "rows": out_rows, "items": ok_rows, "input_mib": round(nbytes / 2**20, 3),
            "seconds": round(total, 3), "decode_s": round(spent["decode"], 3), "tokenize_s": round(spent["tokenize"], 3),
            "write_and_other_s": round(total - spent["decode"] - spent["tokenize"], 3),
            "rows_per_s": out_rows / total, "items_per_s": ok_rows / total, "mib_per_s": nbytes / 2**20 / total}


class _Timed:
    """A stage of the worker, its call timed into `spent[name]`; anything else passes through."""

    def __init__(self, inner, name: str, spent: dict):
        self._inner, self._name, self._spent = inner, name, spent

    def __call__(self, batch, **kwargs):
        t = time.perf_counter()
        out = self._inner(batch, **kwargs)
        self._spent[self._name] += time.perf_counter() - t
        return out

    def __getattr__(self, name):
        return getattr(self._inner, name)


def item_bytes(recipe, units: list) -> dict[int, int]:
    """Raw input bytes of each work item, cut as `run_items` cuts them."""
    from dataengine.pipeline.items import item_units_for

    units = sorted(units, key=lambda u: u.unit_id)
    size = item_units_for(len(units), recipe.execution.item_units)
    return {i: sum(unit_bytes(u) for u in units[s:s + size]) for i, s in enumerate(range(0, len(units), size))}


def measure_run(recipe, out: Path, tokdir: Path, timing_dir: Path, item_nbytes: dict[int, int]) -> dict:
    """One `run_pipeline` with the profile patches; Ray must already be up (`start_ray`)."""
    import ray

    from dataengine.pipeline import run as run_mod

    sw, arrivals, marks = Stopwatch(), [], {}
    shutil.rmtree(timing_dir, ignore_errors=True)
    timing_dir.mkdir(parents=True)
    shutil.rmtree(out.parent / f".{out.name}.work", ignore_errors=True)  # no resume: every item is computed
    t0 = time.time()
    with benchlib.CpuSampler() as cpu_sampler, raytiming.profiled(run_mod, sw, arrivals, marks):
        run_mod.run_pipeline(recipe, out, tokenizers_dir=tokdir, log=log)
    total = time.time() - t0
    cpu = cpu_sampler.by_process()
    cpus = ray.cluster_resources().get("CPU", 1)
    rows = sum(a[1] for a in arrivals)
    steady = {}
    if len(arrivals) >= 2:
        span = arrivals[-1][0] - arrivals[0][0]
        later = arrivals[1:]
        steady = {"seconds": round(span, 3), "work_items": len(arrivals),
                  "rows_per_s": sum(a[1] for a in later) / span, "items_per_s": sum(a[2] for a in later) / span,
                  "mib_per_s": sum(item_nbytes.get(a[4], 0) for a in later) / 2**20 / span}
    execute_s = sw.seconds.get(raytiming.ITEMS, float("nan"))
    profile = {k: round(v, 3) for k, v in sorted(sw.seconds.items(), key=lambda kv: -kv[1])}
    profile["other (sort, work folder, token shares)"] = round(total - sum(sw.seconds.values()), 3)
    origin = marks.get("execute_start", t0)
    first = arrivals[0][0] - origin if arrivals else None
    timings = raytiming.read_timings(timing_dir)
    return {
        "rows": rows, "items": sum(a[2] for a in arrivals), "work_items": len(arrivals),
        "input_mib": round(sum(item_nbytes.values()) / 2**20, 2),
        "ray_cpus": cpus, "run_seconds": round(total, 3), "execute_seconds": round(execute_s, 3),
        "first_item_after_execute_start_s": round(first, 3) if first is not None else None,
        "steady": steady,
        # [s after run_items began, rows, work item]
        "item_arrivals": [[round(a[0] - origin, 2), a[1], a[4]] for a in arrivals],
        "execute_rows_per_s": rows / execute_s, "run_rows_per_s": rows / total,
        "driver_profile_s": profile,
        "curate_timings_s": marks.get("curate_timings", {}),
        "cpu_seconds_by_process": cpu,  # the whole run, every process of the local Ray
        "ray_profile": raytiming.summarize_ray(timings, (arrivals[0][0], arrivals[-1][0]) if len(arrivals) >= 2
                                               else None, cpus, origin),
    }


def setup(work: Path, copies: int, overrides: list[str]):
    from dataengine.discover import discover
    from dataengine.recipe import load_recipe

    tokdir = benchlib.tokenizers(work)
    corpus = benchlib.replicated_corpus(work, copies)
    recipe = load_recipe(benchlib.RECIPE, inputs=[str(corpus)], overrides=overrides)
    found = discover([(s.name, recipe.resolve(s.path)) for s in recipe.sources],
                     max_file_bytes=recipe.decode.max_file_bytes)
    return tokdir, corpus, recipe, found


def item_units(recipe, found) -> int:
    from dataengine.pipeline.items import item_units_for

    return item_units_for(len(found.units), recipe.execution.item_units)


def start_ray(num_cpus: int | None, timing_dir: Path) -> float:
    """Start the local Ray the pipeline will reuse; returns the seconds it took (excluded from every rate)."""
    raytiming.worker_env(Path(__file__).resolve().parent, timing_dir)
    import ray

    from dataengine.pipeline.ray_session import init_ray

    t0 = time.time()
    # address="local": a NEW local Ray. A bare ray.init() joins any cluster another process started on this
    # machine (/tmp/ray/ray_current_cluster), and the numbers would be that cluster's.
    ray.init(address="local", num_cpus=num_cpus, include_dashboard=False, logging_level="WARNING",
             log_to_driver=False, **raytiming.ray_init_kwargs())
    init_ray(None)  # the pipeline's own settings (progress bars off), on the Ray just started
    return time.time() - t0


def vocab_file(tokdir: Path, recipe, dest: Path) -> Path:
    from dataengine.pipeline.tokenize_stage import load_tokenizers
    from dataengine.vocab import Vocab

    path = dest / "vocab.json"
    Vocab.build(load_tokenizers(tokdir, sorted(recipe.tokenizers))).save(path)
    return path


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--copies", type=int, default=8, help="copies of the demo corpus in the input (default 8)")
    ap.add_argument("--work", help=f"cache folder for corpus and tokenizers (default {benchlib.DEFAULT_WORK})")
    ap.add_argument("--num-cpus", type=int, help="CPUs of the local Ray (default: all)")
    ap.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="recipe override, repeatable")
    ap.add_argument("--ideal-runs", type=int, default=2, help="ideal loops (before/after the pipeline; 1: before)")
    ap.add_argument("--keep-output", help="move the run's output folder here (e.g. for train_throughput.py --shards)")
    ap.add_argument("--name", default="pipeline_efficiency", help="results file bench/results/NAME.json")
    ap.add_argument("--results", default=str(benchlib.RESULTS), help="results folder")
    args = ap.parse_args(argv)

    work = benchlib.work_dir(args.work)
    tokdir, corpus, recipe, found = setup(work, args.copies, args.set)
    one_copy = [u for u in found.units if u.media.startswith("copy-000/")]
    nbytes = item_bytes(recipe, found.units)
    size = item_units(recipe, found)
    log(f"corpus {corpus}: {len(found.units)} sample groups, {sum(nbytes.values()) / 2**20:.1f} MiB "
        f"({args.copies} copies) in {len(nbytes)} work items of {size}; ideal on the {len(one_copy)} groups "
        "of one copy")
    timing_dir = work / "timing"
    with tempfile.TemporaryDirectory(dir=work) as tmp:
        tmp = Path(tmp)
        vocab_path = vocab_file(tokdir, recipe, tmp)
        ideals = [ideal(recipe, one_copy, tokdir, vocab_path, size)]
        log(f"ideal (1 process): {ideals[0]['rows_per_s']:.1f} rows/s")
        ray_start = start_ray(args.num_cpus, timing_dir)
        run = measure_run(recipe, tmp / "out", tokdir, timing_dir, nbytes)
        if args.ideal_runs > 1:
            ideals.append(ideal(recipe, one_copy, tokdir, vocab_path, size))
            log(f"ideal again: {ideals[-1]['rows_per_s']:.1f} rows/s")
        if args.keep_output:
            shutil.rmtree(args.keep_output, ignore_errors=True)
            shutil.move(str(tmp / "out"), args.keep_output)
    import ray

    ray.shutdown()
    mean = {k: sum(i[k] for i in ideals) / len(ideals) for k in ("rows_per_s", "items_per_s", "mib_per_s")}
    cpus = run["ray_cpus"]
    eff = run["steady"]["rows_per_s"] / (mean["rows_per_s"] * cpus) if run["steady"] else float("nan")
    result = {
        "target": TARGET, "ratio": round(eff, 3), "pass": bool(eff >= TARGET),
        "efficiency_steady": round(eff, 3),
        "efficiency_execute": round(run["execute_rows_per_s"] / (mean["rows_per_s"] * cpus), 3),
        "efficiency_run_less_ray_start": round(run["run_rows_per_s"] / (mean["rows_per_s"] * cpus), 3),
        "ray_start_seconds": round(ray_start, 2),
        "ray_start_share_of_run": round(ray_start / (ray_start + run["run_seconds"]), 3),
        "corpus": {"copies": args.copies, "sample_groups": len(found.units), "input_mib": run["input_mib"],
                   "work_items": len(nbytes), "item_units": size,
                   "note": "copies are hard links under distinct paths: decoded and tokenized again, "
                           "then dropped by exact dedup"},
        "execution": dataclasses.asdict(recipe.execution), "overrides": args.set,
        "ideal": {"cpus": cpus, "mean_rows_per_s": round(mean["rows_per_s"], 2),
                  "mean_items_per_s": round(mean["items_per_s"], 2), "mean_mib_per_s": round(mean["mib_per_s"], 4),
                  "runs": [{k: (round(v, 3) if isinstance(v, float) else v) for k, v in i.items()} for i in ideals]},
        "pipeline": run,
    }
    print_report(result)
    benchlib.write_result(args.name, result, Path(args.results))
    return 0


def print_report(r: dict) -> None:
    p, i = r["pipeline"], r["ideal"]
    s = p["steady"]
    print(f"\npipeline efficiency {r['ratio']:.3f} (target >= {r['target']}): "
          f"steady {s.get('rows_per_s', 0):.1f} rows/s, {s.get('items_per_s', 0):.1f} items/s, "
          f"{s.get('mib_per_s', 0):.3f} MiB/s over ideal {i['mean_rows_per_s']:.1f} rows/s x {i['cpus']:g} CPUs")
    print(f"  end to end: run_items {r['efficiency_execute']:.3f}, run less Ray start "
          f"{r['efficiency_run_less_ray_start']:.3f}; Ray start {r['ray_start_seconds']}s = "
          f"{100 * r['ray_start_share_of_run']:.1f}% of the run")
    print(f"  {'stage (driver wall time)':<44}{'seconds':>9}{'share':>8}")
    for k, v in p["driver_profile_s"].items():
        print(f"  {k:<44}{v:>9.2f}{100 * v / p['run_seconds']:>7.1f}%")
    ideal_run = i["runs"][0]
    print(f"  ideal, one process (ItemWorker): decode {ideal_run['decode_s']}s, tokenize {ideal_run['tokenize_s']}s, "
          f"part write and the rest {ideal_run['write_and_other_s']}s")
    for stage, d in p["ray_profile"].items():
        if isinstance(d, dict):
            print(f"  ray {stage:<14} busy {d['busy_s']:8.2f}s in {d['calls']} calls on {d['processes']} processes, "
                  f"from {d['first_start_s']}s to {d['last_end_s']}s after run_items began")
    print(f"  {p['work_items']} work items committed from {p['first_item_after_execute_start_s']}s to "
          f"{p['item_arrivals'][-1][0] if p['item_arrivals'] else None}s")
    if p["curate_timings_s"]:
        print("  curation phases (Written.timings): "
              + ", ".join(f"{k} {v:.2f}s" for k, v in p["curate_timings_s"].items()))
    print("  CPU seconds by process over the whole run: "
          + ", ".join(f"{k} {v:.1f}" for k, v in p["cpu_seconds_by_process"].items()))
    if "cpu_utilization_in_window" in p["ray_profile"]:
        print(f"  CPU busy with work items during the steady window: "
              f"{100 * p['ray_profile']['cpu_utilization_in_window']:.1f}%")
    sys.stdout.flush()


if __name__ == "__main__":
    sys.exit(main())
