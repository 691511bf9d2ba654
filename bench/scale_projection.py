"""The projection on paper for `scale_out.py`: 1B samples on 16, 64 and 256 nodes, per stage.

MEASURED here (on the largest size's run, this machine):
  - bytes per row of every record curation moves: `scan.scan_part` on one real candidate part
    (meta, EXACT and BANDS records, MinHash signatures), order-key length (edges and pairs are two
    order keys), the part's scan columns and whole rows in memory, a written sequence row in memory
    (the range shuffle moves those), part and shard bytes on disk;
  - per row: candidate pairs, verified pairs, exact duplicates (OUT/stats.json);
  - seconds per row per stage: decode + tokenize from the run's /proc CPU of its ItemWorker processes
    (actor start-up left out: a fixed cost); every curation stage from a profile of the real
    `curate_and_write` (+ `write_rejects`) re-run here on the run's candidate parts, on a local Ray,
    with `ray.timeline()`: busy seconds of each task by function (scan_part, exact, bands, ...; on a
    machine whose cores the tasks fill, ~ core-seconds; the profile's whole-tree CPU is recorded
    beside it), and the star rounds of connected components (_star calls / R);
  - the driver's Python heap per listing task (`scale_out.driver_state_bytes`: the listing plan, one task per
    top-level folder; nothing per sample group), and the driver memory
    per live ObjectRef of a small task return (a local Ray, here: `ref_cost`);
  - the largest Ray process's peak RSS (an ItemWorker: the memory one worker needs).
ASSUMED (flags; printed with the result): the node (cores, memory, NIC), the mixture groups (the
driver folds a groups x 4,096 histogram), the star rounds at 1B (the measured ones), that 1B samples
look like this corpus (its tokens per row and duplicate rates), that CPU parallelises perfectly over
all cores, and that a shuffle is network-bound at the NIC rate with (N-1)/N of its bytes crossing it.
The engine's own rules give the plan: `items.item_units_for` (parts P), R = G = min(P, 2 x CPUs)
reducers and part groups, range reducers min(4 x rows / shard_rows, 4P, 4096) + 1 per split, tasks
in flight W = 4 x CPUs, and a combine level (`curate.exchange`) wherever a reducer would open more than
FAN_IN files: mapper files are rewritten once in groups, so those bytes cross the network twice.
Shuffles go through files on shared storage, so the driver holds W task handles, never one per
(mapper, reducer); its plan is the part paths (P x PATH_BYTES).
"""
from __future__ import annotations

import json
import math
from pathlib import Path

from dataengine.curate.exchange import FAN_IN


STAGES = {  # curation stage -> the task functions (`ray.timeline()` names, last component) whose time it is
    "scan": ["scan_part"], "exact shuffle": ["exact", "twins"], "band shuffle": ["bands"],
    "pair joins": ["attach", "agree"],
    "connected components": ["_shuffle", "_star", "_label", "route", "sizes"],
    "fate": ["fate"], "finalize": ["finalize"], "range shuffle + shard write": ["range_", "write"],
    "rejects": ["write_rejects"], "combine levels": ["_combine_body"],
}
PATH_BYTES = 150  # a part's path as a Python str on the driver (the plan: parts and reject files)


def add_arguments(ap) -> None:
    g = ap.add_argument_group("projection (assumed)")
    g.add_argument("--samples", type=float, default=1e9, help="samples to project to (default 1e9)")
    g.add_argument("--nodes", type=int, nargs="+", default=[16, 64, 256])
    g.add_argument("--node-cores", type=int, default=32)
    g.add_argument("--node-mem-gib", type=float, default=128)
    g.add_argument("--nic-gbit", type=float, default=25, help="per node, each way (default 25)")
    g.add_argument("--groups", type=int, default=64, help="mixture groups (source/kind) at 1B (default 64)")
    g.add_argument("--cc-rounds", type=int, help="star rounds of connected components at 1B (default: measured)")
    g.add_argument("--no-projection", action="store_true")


def record_sizes(out: Path, recipe) -> dict:
    """Bytes per row of what curation moves, from one real candidate part and one written shard."""
    import numpy as np
    import pyarrow.parquet as pq

    from dataengine.curate import scan
    from dataengine.curate.apply import stats_frame
    from dataengine.curate.filters import parse_filters
    from dataengine.curate.stats import STAT_FIELDS
    from dataengine.pipeline.cache import candidate_files

    parts = candidate_files(out)
    path = parts[len(parts) // 2]
    c = recipe.curate
    s = scan.scan_part(str(path), 0, parse_filters(c.filters, STAT_FIELDS), c.dedup, 1, stats_frame)
    rows = pq.ParquetFile(path).metadata.num_rows
    n = max(s.meta.num_rows, 1)
    okey = np.mean([len(k) for k in s.meta.column("okey").to_pylist()]) if s.meta.num_rows else 60.0
    bands = s.bands[0]
    shard = min((out / "parquet").glob("train-*.parquet"))
    seq = pq.read_table(shard)
    return {
        "part": path.name, "part_rows": rows, "scanned_rows": s.meta.num_rows,
        "scan_columns_in_memory": pq.read_table(path, columns=scan.SCAN_COLUMNS).nbytes / rows,
        "part_row_in_memory": pq.read_table(path).nbytes / rows, "part_row_on_disk": path.stat().st_size / rows,
        "meta": s.meta.nbytes / n, "exact_record": sum(t.nbytes for t in s.exact) / n,
        "band_records_per_row": bands.num_rows / n, "band_record": bands.nbytes / max(bands.num_rows, 1),
        "signature": (s.sig["sig"].nbytes + s.sig["rid"].nbytes) / max(len(s.sig["rid"]), 1),
        "order_key_chars": float(okey), "edge": 2 * (okey + 4), "pair": 2 * (okey + 4) + 8,
        "sequence_row_in_memory": seq.nbytes / seq.num_rows, "sequence_row_on_disk": shard.stat().st_size / seq.num_rows,
    }


def ref_cost(per_task: int = 200, payload: int = 100) -> dict:
    """Driver RSS per live ObjectRef of a small (inline) task return: a fresh Python process with its own
    local Ray (nothing else moves its RSS) holds 100k, then 200k, then 400k refs (none released); the
    marginal bytes per ref are the slope from 100k to 400k (one-time growth at the start left out)."""
    import subprocess
    import sys

    out = subprocess.run([sys.executable, __file__, "--ref-cost", str(per_task), str(payload)],
                         stdout=subprocess.PIPE, text=True, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def _ref_cost_child(per_task: int, payload: int) -> dict:
    import gc
    import os

    import ray

    page = os.sysconf("SC_PAGE_SIZE")
    rss = lambda: int(Path("/proc/self/statm").read_text().split()[1]) * page
    ray.init(address="local", num_cpus=2, include_dashboard=False, logging_level="WARNING", log_to_driver=False)
    f = ray.remote(num_cpus=1)(lambda k, size: tuple(b"x" * size for _ in range(k)))
    ray.get(f.options(num_returns=per_task).remote(per_task, payload))  # warm: workers up, function loaded
    held, points = [], []
    gc.collect()
    points.append((0, rss()))
    for target in (100_000, 200_000, 400_000):
        while len(held) * per_task < target:
            held.append(f.options(num_returns=per_task).remote(per_task, payload))
        ray.wait([r for rs in held for r in rs], num_returns=len(held) * per_task, fetch_local=False)
        gc.collect()
        points.append((len(held) * per_task, rss()))
    ray.shutdown()
    slope = (points[-1][1] - points[1][1]) / (points[-1][0] - points[1][0])
    return {"payload_bytes": payload, "refs_and_rss_bytes": points, "driver_bytes_per_ref": round(slope, 1),
            "driver_bytes_per_ref_less_payload": round(slope - payload, 1)}


def profile_curation(ray, out: Path, recipe) -> dict:
    """The real `curate_and_write` + `write_rejects` on OUT's candidate parts; busy seconds per task function."""
    import shutil
    import tempfile
    import time

    import benchlib

    from dataengine.curate import components
    from dataengine.curate.distributed import curate_and_write, write_rejects
    from dataengine.pipeline.cache import candidate_files

    parts = [str(p) for p in candidate_files(out)]
    cpus = ray.cluster_resources().get("CPU", 1)
    # one task per core here (components' tasks ask 0.5 CPU: two would share a core and each read twice as
    # busy): the schedule only, nothing computed changes
    saved, components.TASK_CPUS = components.TASK_CPUS, 1.0
    components._tasks.cache_clear()
    with tempfile.TemporaryDirectory(dir=out.parent) as staging:
        shutil.copy(out / "vocab.json", Path(staging) / "vocab.json")
        cpu0, t0 = benchlib.tree_cpu(), time.time()
        written = curate_and_write(parts, recipe, Path(staging), cpus=cpus, log=lambda m: None)
        write_rejects(written.rejects, Path(staging) / "rejects.parquet")
        wall, cpu1 = time.time() - t0, benchlib.tree_cpu()
    components.TASK_CPUS = saved
    components._tasks.cache_clear()
    tl = written.timings
    events = [e for e in ray.timeline() if e.get("ph") == "X"]
    execs: dict[str, list] = {}
    for e in events:
        if e.get("cat") == "task:execute":
            execs.setdefault(e["tid"], []).append((e["ts"], e["dur"]))
    by_fn: dict[str, dict] = {}
    for e in events:
        if not str(e.get("cat", "")).startswith("task::") or e["ts"] / 1e6 < t0:
            continue
        fn = "write_rejects" if "write_rejects" in e["name"] else e["name"].rsplit(".", 1)[-1]
        ex = sum(d for ts, d in execs.get(e["tid"], []) if e["ts"] <= ts <= e["ts"] + e["dur"])
        d = by_fn.setdefault(fn, {"calls": 0, "busy_s": 0.0, "execute_s": 0.0})
        d["calls"] += 1
        d["busy_s"] += e["dur"] / 1e6
        d["execute_s"] += ex / 1e6
    R = max(1, min(len(parts), int(2 * cpus)))
    used = sum(sec - cpu0.get(pid, (name, 0.0))[1] for pid, (name, sec) in cpu1.items())
    return {"parts": len(parts), "ray_cpus": cpus, "reducers_R": R, "wall_s": round(wall, 2),
            "curate_timings_s": tl, "tree_cpu_s": round(used, 2),
            "task_busy_s": round(sum(d["busy_s"] for d in by_fn.values()), 2),
            "cc_rounds": by_fn.get("_star", {}).get("calls", 0) // R,
            "by_function": {k: {"calls": v["calls"], "busy_s": round(v["busy_s"], 3), "execute_s": round(v["execute_s"], 3)}
                            for k, v in sorted(by_fn.items(), key=lambda kv: -kv[1]["busy_s"])}}


def cpu_per_row(run: dict, prof: dict) -> dict:
    """Seconds per candidate row per stage: decode + tokenize from the run, curation from the profile."""
    rows = max(run["candidate_rows"], 1)
    by = run["cpu_seconds_by_title"]
    work = sum(v for k, v in by.items() if "ItemWorker" in k and not k.endswith("__init__"))
    init = sum(v for k, v in by.items() if "ItemWorker" in k and k.endswith("__init__"))
    out = {"decode + tokenize": {"seconds": round(work, 2), "s_per_row": work / rows,
                                 "source": "run: /proc CPU of the ItemWorker processes",
                                 "actor_start_cpu_s (fixed, left out)": round(init, 2)}}
    for stage, fns in STAGES.items():
        sec = sum(prof["by_function"].get(f, {}).get("busy_s", 0.0) for f in fns)
        out[stage] = {"seconds": round(sec, 3), "s_per_row": sec / rows, "source": "profile: task busy seconds"}
    return out


def project(args, out: Path, recipe_path: Path, run: dict) -> dict | None:
    if args.no_projection:
        return None
    import ray

    from dataengine.pipeline.items import item_units_for
    from dataengine.recipe import load_recipe

    recipe = load_recipe(recipe_path, inputs=[str(out)])
    rec = record_sizes(out, recipe)
    ray.init(address="local", include_dashboard=False, logging_level="WARNING", log_to_driver=False)
    try:
        prof = profile_curation(ray, out, recipe)
    finally:
        ray.shutdown()
    refs = ref_cost()
    cpu = cpu_per_row(run, prof)
    rows = max(run["candidate_rows"], 1)
    dd = run.get("dedup_text") or {}
    rounds = args.cc_rounds or max(prof["cc_rounds"], 1)
    measured = {"record_bytes": {k: (round(v, 1) if isinstance(v, float) else v) for k, v in rec.items()},
                "driver_ref_cost": refs, "seconds_per_stage": cpu, "curation_profile": prof,
                "per_row": {"candidate_pairs": dd.get("candidate_pairs", 0) / rows,
                            "verified_pairs": dd.get("verified_pairs", 0) / rows,
                            "exact_duplicates": run["dedup_dropped"].get("exact_duplicate", 0) / rows,
                            "near_duplicates": run["dedup_dropped"].get("near_duplicate", 0) / rows,
                            "tokens": run["candidate_tokens"] / rows},
                "driver_listing_plan_bytes_per_task": run["driver_state"]["plan_bytes_per_task"],
                "groups_per_listing_task": run["docs"] / max(run["driver_state"]["listing_tasks"], 1),
                "item_worker_peak_rss_mib": run["largest_ray_process_peak_rss_mib"],
                "at": {"docs": run["docs"], "candidate_rows": rows}}
    S = args.samples
    size = item_units_for(int(S), recipe.execution.item_units)
    P = math.ceil(S / size)
    per = measured["per_row"]
    train = S * (1 - recipe.output.val_fraction)
    ranges = {s: min(4 * math.ceil(n / recipe.output.shard_rows), 4 * P, 4096) + 1
              for s, n in (("train", train), ("val", S - train))}
    nodes = {}
    for N in args.nodes:
        cores = N * args.node_cores
        R = G = max(1, min(P, 2 * cores))
        nic = args.nic_gbit * 1e9 / 8 * N  # bytes/s the cluster's NICs move, each way
        cross = (N - 1) / N
        rp = size  # rows per part

        W = 4 * cores

        def opens(mappers, reducers):
            """(files a reducer opens, combine groups or 0) for one exchange."""
            groups = math.ceil(mappers / FAN_IN) if mappers > FAN_IN else 0
            return (groups or mappers), groups

        def stage(name, *, shuffle=0.0, exchange=None, files=0, mem_task=0.0, tasks=0, note="",
                  cores=cores, cross=cross, nic=nic):
            c = cpu[name]["s_per_row"] * S
            opened, groups = opens(*exchange) if exchange else (0, 0)
            moved = shuffle * (2 if groups else 1)  # a combine level rewrites the mapper files once
            t_cpu, t_net = c / cores, moved * cross / nic
            d = {"shuffle_bytes": shuffle, "bytes_moved": moved, "files_written": files + groups,
                 "file_opens": (exchange[1] * opened + (exchange[0] if groups else 0)) if exchange else 0,
                 "combine_groups": groups, "tasks": tasks, "driver_tasks_in_flight": min(W, tasks),
                 "memory_per_task_bytes": mem_task,
                 "core_seconds": c, "time_cpu_s": t_cpu, "time_network_s": t_net, "time_s": max(t_cpu, t_net)}
            if note:
                d["note"] = note
            return d

        exact_b = S * rec["exact_record"]
        band_b = S * rec["band_records_per_row"] * rec["band_record"]
        pairs = S * per["candidate_pairs"]
        members = S * (per["exact_duplicates"] + per["near_duplicates"])
        edges = S * (per["exact_duplicates"] + per["verified_pairs"])
        seq_b = S * rec["sequence_row_in_memory"]
        nr = ranges["train"] + ranges["val"]
        st = {
            "decode + tokenize": stage("decode + tokenize", tasks=P, files=P,
                                       mem_task=run["largest_ray_process_peak_rss_mib"] * 2**20,
                                       note=f"no shuffle: each worker writes its part ({rec['part_row_on_disk']:.0f} "
                                            "B/row on storage)"),
            "scan": stage("scan", tasks=P, files=5 * P,
                          mem_task=rp * (rec["scan_columns_in_memory"] + rec["meta"] + rec["exact_record"]
                                         + rec["band_records_per_row"] * rec["band_record"] + rec["signature"]),
                          note="reads every part's scan columns; writes meta, drops, signatures and two bucket files"),
            "exact shuffle": stage("exact shuffle", shuffle=exact_b, exchange=(P, R), files=2 * R + G,
                                   tasks=R + G, mem_task=exact_b / R),
            "band shuffle": stage("band shuffle", shuffle=band_b, exchange=(P, R), files=R, tasks=R,
                                  mem_task=band_b / R),
            "pair joins": stage("pair joins", shuffle=(pairs + members) * (rec["pair"] + rec["signature"]),
                                exchange=(G, G), files=5 * G, tasks=4 * G,
                                mem_task=S * rec["signature"] / G + (pairs + members) / G * (rec["pair"] + rec["signature"]),
                                note="each join task reads its part group's signatures (S x 520 B / G, P / G files)"),
            "connected components": stage("connected components", shuffle=edges * rec["edge"] * 2 * rounds,
                                          exchange=(R, R), files=rounds * 2 * R + 4 * R, tasks=rounds * 2 * R,
                                          mem_task=edges * rec["edge"] * 2 / R,
                                          note=f"{rounds} star rounds; edges = exact + verified pairs"),
            "fate": stage("fate", tasks=P, files=P, mem_task=rp * rec["meta"] * 3),
            "finalize": stage("finalize", tasks=P, files=2 * P,
                              mem_task=rp * (rec["part_row_in_memory"] + rec["sequence_row_in_memory"]),
                              note="reads every part again, whole"),
            "range shuffle + shard write": stage(
                "range shuffle + shard write", shuffle=seq_b, exchange=(P, nr), files=nr,
                tasks=nr + math.ceil(S / recipe.output.shard_rows), mem_task=seq_b / nr,
                note="every kept sequence (its tokens) moves through shared storage once (twice with combine)"),
        }
        in_flight = max(s["driver_tasks_in_flight"] for s in st.values())
        nodes[str(N)] = {
            "cores": cores, "parts": P, "item_units": size, "reducers_R": R, "part_groups_G": G, "ranges": ranges,
            "tasks_in_flight_W": W, "fan_in": FAN_IN,
            "stages": st, "total_time_s": sum(s["time_s"] for s in st.values()),
            "shared_storage_bytes": S * (rec["meta"] + rec["signature"]) + exact_b + band_b + seq_b,
            "driver": {"tasks_in_flight_peak": in_flight,
                       "task_bytes": in_flight * refs["driver_bytes_per_ref_less_payload"],
                       "plan_bytes": 2 * P * PATH_BYTES,  # part paths and reject files
                       # mixture histogram (groups x 4,096 bins, ~200 B a dict entry) and two bottom-k id samples
                       "folded_bytes": args.groups * (1 << 12) * 200 + 2 * 1024 * 200,
                       "listing_plan_bytes": S / measured["groups_per_listing_task"]
                       * measured["driver_listing_plan_bytes_per_task"],  # folders shaped like this corpus's
                       "node_memory_bytes": args.node_mem_gib * 2**30},
        }
    return {"assumed": {"samples": S, "node": {"cores": args.node_cores, "memory_gib": args.node_mem_gib,
                                               "nic_gbit_each_way": args.nic_gbit,
                                               "mixture_groups": args.groups},
                        "cc_rounds": rounds, "path_bytes": PATH_BYTES,
                        "data": "1B samples shaped like this corpus (per-row tokens, record sizes, duplicate rates)",
                        "time": "max(CPU core-seconds / all cores, bytes moved x (N-1)/N / all NICs) per stage, "
                                "stages in sequence; shared storage as fast as the NICs; no stragglers, no "
                                "scheduling or per-file cost (file_opens counts them)"},
            "measured": measured, "nodes": nodes}


def _fmt(b: float) -> str:
    for unit, k in (("TB", 1e12), ("GB", 1e9), ("MB", 1e6), ("KB", 1e3)):
        if abs(b) >= k:
            return f"{b / k:.1f} {unit}"
    return f"{b:.0f} B"


def print_projection(p: dict | None) -> None:
    if not p:
        return
    m = p["measured"]
    print(f"\nprojection to {p['assumed']['samples']:.0e} samples (node: {p['assumed']['node']}); measured bytes/row: "
          + ", ".join(f"{k} {v}" for k, v in m["record_bytes"].items() if isinstance(v, float)))
    print("measured seconds per row: " + ", ".join(f"{k} {v['s_per_row']:.2e}"
                                                  for k, v in m["seconds_per_stage"].items()))
    prof = m["curation_profile"]
    print(f"curation profile ({prof['parts']} parts, {prof['ray_cpus']:g} CPUs): wall {prof['wall_s']}s, task busy "
          f"{prof['task_busy_s']}s, tree CPU {prof['tree_cpu_s']}s, {prof['cc_rounds']} star rounds; phases "
          + ", ".join(f"{k} {v}s" for k, v in prof["curate_timings_s"].items()))
    for n, d in p["nodes"].items():
        dr = d["driver"]
        print(f"  {n} nodes ({d['cores']} cores, P={d['parts']} parts, R=G={d['reducers_R']}): total "
              f"{d['total_time_s'] / 3600:.2f} h; driver: {dr['tasks_in_flight_peak']} tasks in flight "
              f"({_fmt(dr['task_bytes'])}), plan {_fmt(dr['plan_bytes'])}, folded {_fmt(dr['folded_bytes'])}, "
              f"listing plan {_fmt(dr['listing_plan_bytes'])}; shared storage {_fmt(d['shared_storage_bytes'])}")
        for name, s in d["stages"].items():
            print(f"    {name:<28} moved {_fmt(s['bytes_moved']):>9}  files {s['files_written']:>10.3g}  "
                  f"opens {s['file_opens']:>10.3g}  mem/task {_fmt(s['memory_per_task_bytes']):>9}  "
                  f"time {s['time_s']:>9.0f} s")


if __name__ == "__main__":
    import sys

    if sys.argv[1:2] == ["--ref-cost"]:  # child of `ref_cost`
        print(json.dumps(_ref_cost_child(*map(int, sys.argv[2:4]))))
    else:  # re-print the projection of a result file
        print_projection(json.loads(Path(sys.argv[1]).read_text())["projection"])
