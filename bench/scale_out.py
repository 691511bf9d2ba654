"""Scale-out (issue 13): `dataengine run` end to end on generated text corpora 16x apart; driver memory,
total memory and throughput per size, and a projection on paper to 1B samples on 16..256 nodes.

    .venv/bin/python bench/scale_out.py                                 # the measured run: 7000 28000 112000 docs
    .venv/bin/python bench/scale_out.py --docs 500 2000 8000 --results /tmp/so   # a trial

Corpus (`scale_corpus.py`): documents of 2-4 KB from a seeded order-2 word Markov
chain over Python's own docs (`pydoc_data.topics`), one `.txt` per document in
folders of 1,000, cached in the work folder; the corpus of N documents is the
first N of one pool, so the sizes are nested. Recipe: `pipelines/demo.yaml` with
only the text tokenizer (BPE, 8,192), filters `text_chars >= 20` and
`text_lang in [en]`, exact + near dedup, mixture `temperature` 2.0, the default
execution settings (`item_units` 0). The BPE is fitted once (`dataengine fit` on
the smallest corpus) and passed to every run with `--tokenizers`.

Each size is one subprocess, the real command
``.venv/bin/python -m dataengine.cli run RECIPE --input CORPUS --output OUT --tokenizers DIR --no-report
--address local`` (its own new local Ray, started inside it: `--address local`, so that it never joins a
cluster another process left on this machine). A thread here samples /proc every 0.25 s:
the resident memory of that process (the DRIVER) and of its whole tree (driver +
raylet, GCS and every Ray worker: the sum, shared pages counted in each process
that maps them), and the CPU seconds of each process, each sample's increase
charged to the process title at that moment (a Ray worker's title names the task
it runs: ``ray::scan_part``, ``ray::_star``, ...), which gives CPU seconds per stage.

Throughput over the decode + tokenize phase comes from the work items' commit
times: each part's mtime (the worker writes it, then renames it into place; the
driver keeps it, hard-linked, in OUT/cache/candidates): rows and tokens of the
parts committed after the first, over the first-to-last commit span. Curation
(filters, dedup, split, mixture, shard writing) is the span from the last commit
to the last shard written, and its phases come from OUT/cache/timings.json when
the engine writes one (`Written.timings`). Judged: driver peak at the largest
size <= 1.2 x the smallest; tree peak <= 1.5 x; tokens/s of decode + tokenize
flat (slowest >= 0.85 x fastest). The driver's own listing plan (one entry per
listing task, nothing per sample group) is measured with tracemalloc here, per size. The projection is in `scale_projection.py`.
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path

import benchlib
import scale_corpus
import scale_projection
from benchlib import ROOT, log

from dataengine.proctree import Sampler, descendants, process_table

DRIVER_MAX, TREE_MAX, FLAT = 1.2, 1.5, 0.85
DEFAULT_DOCS = [7000, 28000, 112000]  # ~500 tokens a document: 16x, 56M tokens at the top


# ------------------------------------------------------------------------------------------ recipe, tokenizer
def write_recipe(work: Path) -> Path:
    import yaml

    demo = yaml.safe_load(benchlib.RECIPE.read_text())
    demo.update(name="scale-out", tokenizers={"text": {"family": "bpe", "params": {"vocab_size": 8192}}},
                tokenizers_dir=str(work / "scale-tokenizers"))
    demo["curate"].update(filters={"text_chars": {"min": 20}, "text_lang": {"allow": ["en"]}},
                          dedup={"exact": True, "near": True},
                          mixture={"policy": "temperature", "temperature": 2.0, "max_epochs": 4.0})
    demo["execution"] = {k: v for k, v in demo["execution"].items() if k != "item_units"}  # the default
    path = work / "scale-recipe.yaml"
    path.write_text(yaml.safe_dump(demo, sort_keys=False))
    return path


def fitted_tokenizer(recipe: Path, corpus: Path, work: Path, tag: str) -> Path:
    tokdir = work / f"scale-tokenizers-{tag}"
    if not (tokdir / "text" / "card.yaml").is_file():
        log(f"fitting the text BPE on {corpus} into {tokdir}")
        subprocess.run([sys.executable, "-m", "dataengine.cli", "fit", str(recipe), "--input", str(corpus),
                        "--tokenizers", str(tokdir)], cwd=ROOT, check=True, stdout=sys.stderr)
    return tokdir


# ------------------------------------------------------------------------------------------ driver's own state
def driver_state_bytes(recipe_path: Path, corpus: Path) -> dict:
    """Python heap the driver itself builds before any Ray work: the listing plan (`listing.plan`, one
    task per top-level folder or chunk of the root's files). Everything per sample group is built by
    the listing tasks; the driver keeps one summary per task (`Listing.parts`)."""
    import gc
    import tracemalloc

    from dataengine import listing, storage
    from dataengine.recipe import load_recipe, source_roots

    recipe = load_recipe(recipe_path, inputs=[str(corpus)])
    gc.collect()
    tracemalloc.start()
    base = tracemalloc.get_traced_memory()[0]
    import tempfile

    with tempfile.TemporaryDirectory() as work:  # the root's own file names go there, not into the plan
        tasks = listing.plan(source_roots(recipe), storage.options_from_env(), work)
    total = tracemalloc.get_traced_memory()[0] - base
    tracemalloc.stop()
    return {"listing_tasks": len(tasks), "plan_bytes": total, "plan_bytes_per_task": round(total / max(len(tasks), 1), 1)}


# ------------------------------------------------------------------------------------------ one run
class RunSampler(Sampler):
    """Every `every_s`: RSS of `root` (the driver) and of its tree, and CPU seconds charged to process titles."""

    def __init__(self, root: int, every_s: float = 0.25):
        self.root, self.every_s = root, every_s
        self.page, self.tick = os.sysconf("SC_PAGE_SIZE"), os.sysconf("SC_CLK_TCK")
        self.peak_driver = self.peak_tree = self.peak_other = 0
        self.cpu_seen: dict[int, float] = {}
        self.cpu_by_title: dict[str, float] = {}
        self.first_seen: dict[str, float] = {}
        self.series: list[tuple[float, int, int]] = []
        self.t0 = time.time()
        self.samples = 0

    def sample(self) -> None:
        table = process_table()
        if self.root not in table:
            return
        tree, driver, other = 0, 0, 0
        now = time.time()
        for pid in descendants(table, self.root):
            try:
                rss = int(Path(f"/proc/{pid}/statm").read_text().split()[1]) * self.page
                argv = Path(f"/proc/{pid}/cmdline").read_bytes().decode(errors="replace").split("\0")
            except (OSError, ValueError, IndexError):
                continue
            tree += rss
            if pid == self.root:
                driver, title = rss, "driver (dataengine run)"
            else:
                other = max(other, rss)
                title = _title(argv)
            f = table[pid]
            cpu = (int(f[11]) + int(f[12])) / self.tick
            used = cpu - self.cpu_seen.get(pid, 0.0)  # a new process: all of its CPU is new (it is in the run)
            self.cpu_seen[pid] = cpu
            self.cpu_by_title[title] = self.cpu_by_title.get(title, 0.0) + used
            self.first_seen.setdefault(title, now - self.t0)
        self.peak_driver, self.peak_tree = max(self.peak_driver, driver), max(self.peak_tree, tree)
        self.peak_other = max(self.peak_other, other)
        self.series.append((round(now - self.t0, 2), driver, tree))
        self.samples += 1


def _title(argv: list[str]) -> str:
    """A Ray worker's title (``ray::scan_part``: the task it runs now), else the program (a script for python)."""
    head = argv[0].strip() if argv else ""
    if head.startswith("ray::"):
        return head.split(" ")[0]
    name = Path(head.split(" ")[0]).name or "?"
    if name.startswith("python"):
        script = next((a for a in argv[1:] if a.endswith(".py")), None)
        return f"python {Path(script).name}" if script else "python"
    return name


def _read_log(stream, lines: list, t0: float, sink) -> None:
    for line in stream:
        lines.append((round(time.time() - t0, 2), line.rstrip("\n")))
        sink.write(line)
        sink.flush()


def part_facts(parts: list[Path]) -> list[dict]:
    """Per committed part: mtime (the commit), rows, ok rows, tokens of ok rows, file bytes."""
    import pyarrow.compute as pc
    import pyarrow.parquet as pq

    out = []
    for p in parts:
        t = pq.read_table(p, columns=["status", "num_tokens"])
        ok = pc.equal(t.column("status"), "ok")
        out.append({"mtime": p.stat().st_mtime, "rows": t.num_rows, "ok": int(pc.sum(ok.cast("int64")).as_py() or 0),
                    "tokens": int(pc.sum(pc.if_else(ok, t.column("num_tokens"), 0)).as_py() or 0),
                    "bytes": p.stat().st_size})
    return sorted(out, key=lambda f: f["mtime"])


def run_size(recipe: Path, corpus: Path, tokdir: Path, out: Path, logfile: Path, overrides: list[str]) -> dict:
    for p in (out, out.parent / f".{out.name}.work", out.parent / f".{out.name}.staging"):
        shutil.rmtree(p, ignore_errors=True)  # no cache reuse, no resume: every item is computed
    cmd = [os.path.relpath(sys.executable, ROOT), "-m", "dataengine.cli", "run", str(recipe), "--input", str(corpus),
           "--output", str(out), "--tokenizers", str(tokdir), "--no-report", "--address", "local", *[f"--set={s}" for s in overrides]]
    env = {**os.environ, "DATAENGINE_PROGRESS": "0"}
    lines: list = []
    t0 = time.time()
    with open(logfile, "w") as sink:
        proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                stdin=subprocess.DEVNULL, text=True)
        reader = threading.Thread(target=_read_log, args=(proc.stdout, lines, t0, sink), daemon=True)
        with RunSampler(proc.pid) as s:
            reader.start()
            rc = proc.wait()
        reader.join(timeout=5)
    wall = time.time() - t0
    if rc != 0:
        raise RuntimeError(f"{' '.join(cmd)} exited {rc}; see {logfile}")
    return {"cmd": cmd, "wall_s": round(wall, 2), "t0": t0, "log": lines, "sampler": s}


def summarize(run: dict, out: Path, docs: int) -> dict:
    """Everything measured about one size, from the sampler, OUT and the log."""
    from dataengine.pipeline.cache import candidate_files

    s, t0 = run["sampler"], run["t0"]
    parts = part_facts(candidate_files(out))
    stats = json.loads((out / "stats.json").read_text())
    shards = [p for p in (out / "parquet").glob("*.parquet")] + [p for p in (out / "wds").glob("*.tar")]
    last_shard = max(p.stat().st_mtime for p in shards)
    first, last = parts[0]["mtime"], parts[-1]["mtime"]
    span = last - first
    later = parts[1:]
    rows, ok, tokens = (sum(p[k] for p in parts) for k in ("rows", "ok", "tokens"))
    steady = {"seconds": round(span, 2), "work_items": len(parts),
              "rows_per_s": round(sum(p["rows"] for p in later) / span, 2) if span > 0 else None,
              "tokens_per_s": round(sum(p["tokens"] for p in later) / span, 1) if span > 0 else None}
    discovered = next((t for t, line in run["log"] if line.startswith("discovered ")), None)
    timings_file = out / "cache" / "timings.json"
    curate_s = last_shard - last
    phases = {"start_to_discovered_s": discovered,
              "discovered_to_first_commit_s": round(first - t0 - discovered, 2) if discovered is not None else None,
              "decode_tokenize_first_to_last_commit_s": round(span, 2),
              "last_commit_to_last_shard_s (curate + write)": round(curate_s, 2),
              "last_shard_to_exit_s": round(t0 + run["wall_s"] - last_shard, 2)}
    cpu = {k: round(v, 2) for k, v in sorted(s.cpu_by_title.items(), key=lambda kv: -kv[1]) if v >= 0.05}
    curate = stats.get("curate", {})
    dd = curate.get("dedup", {})
    result = {
        "docs": docs, "sample_groups": stats["inputs"]["sample_groups"], "candidate_rows": rows, "ok_rows": ok,
        "candidate_tokens": tokens, "tokens_per_doc": round(tokens / max(ok, 1), 1),
        "sequences": stats["sequences"]["total"], "tokens_written": stats["tokens"]["total"],
        "rejects": {"total": stats["rejects"]["total"], "by_reason": stats["rejects"].get("by_reason", {})},
        "filters_dropped": curate.get("filters", {}).get("dropped", {}),
        "dedup_dropped": dd.get("dropped", {}), "dedup_drop_rate": round(sum(dd.get("dropped", {}).values())
                                                                         / max(dd.get("rows", 1), 1), 5),
        "dedup_text": (dd.get("by_kind") or {}).get("text", {}),
        "driver_peak_rss_mib": round(s.peak_driver / 2**20, 1), "tree_peak_rss_mib": round(s.peak_tree / 2**20, 1),
        "largest_ray_process_peak_rss_mib": round(s.peak_other / 2**20, 1), "rss_samples": s.samples,
        "wall_s": run["wall_s"], "steady": steady,
        "curation_rows_per_s": round(rows / curate_s, 1) if curate_s > 0 else None,
        "phases_s": phases,
        "curate_timings_s": json.loads(timings_file.read_text()) if timings_file.is_file() else None,
        "cpu_seconds_by_title": cpu, "title_first_seen_s": {k: round(v, 2) for k, v in s.first_seen.items()},
        "part_bytes_per_row": round(sum(p["bytes"] for p in parts) / max(rows, 1), 1),
        "memory_series_1s": _downsample(s.series, 1.0),
        "command": " ".join(run["cmd"]),
        "log_tail": [f"{t:8.2f}s {line}" for t, line in run["log"][-12:]],
    }
    if result["curate_timings_s"]:
        total = sum(result["curate_timings_s"].values())
        result["curation_rows_per_s"] = round(rows / total, 1) if total > 0 else None
        result["curation_rows_per_s_source"] = "OUT/cache/timings.json"
    else:
        result["curation_rows_per_s_source"] = "candidate rows / (last shard mtime - last part commit)"
    return result


def _downsample(series, every):
    out, last = [], -1e9
    for t, d, tr in series:
        if t - last >= every:
            out.append([t, round(d / 2**20), round(tr / 2**20)])
            last = t
    return out


# ------------------------------------------------------------------------------------------ main
def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--docs", type=int, nargs="+", default=DEFAULT_DOCS, help=f"sizes (default {DEFAULT_DOCS})")
    ap.add_argument("--work", help=f"cache folder (default {benchlib.DEFAULT_WORK})")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--order", type=int, default=2, choices=[1, 2], help="Markov chain order (default 2)")
    ap.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="recipe override for every run")
    ap.add_argument("--keep-outputs", action="store_true", help="keep each size's OUT (default: only the largest)")
    ap.add_argument("--name", default="scale_out")
    ap.add_argument("--results", default=str(benchlib.RESULTS))
    scale_projection.add_arguments(ap)
    args = ap.parse_args(argv)

    work = benchlib.work_dir(args.work)
    sizes = sorted(set(args.docs))
    recipe = write_recipe(work)
    corpora = {n: scale_corpus.corpus(work, n, seed=args.seed, order=args.order, log=log) for n in sizes}
    tokdir = fitted_tokenizer(recipe, corpora[sizes[0]], work, f"s{args.seed}-o{args.order}-{sizes[0]}")
    outdir = work / "scale-out"
    outdir.mkdir(exist_ok=True)
    runs = []
    for n in sizes:
        driver_state = driver_state_bytes(recipe, corpora[n])
        out = outdir / f"out-{n}"
        log(f"\n=== {n} documents: {corpora[n]}")
        r = summarize(run_size(recipe, corpora[n], tokdir, out, outdir / f"run-{n}.log", args.set), out, n)
        r["driver_state"] = driver_state
        runs.append(r)
        log(f"{n} docs: {r['candidate_tokens']} tokens, wall {r['wall_s']}s, steady {r['steady']['rows_per_s']} rows/s "
            f"{r['steady']['tokens_per_s']} tokens/s, driver peak {r['driver_peak_rss_mib']} MiB, tree peak "
            f"{r['tree_peak_rss_mib']} MiB, dedup drop rate {r['dedup_drop_rate']}")
        if n != sizes[-1] and not args.keep_outputs:
            shutil.rmtree(out, ignore_errors=True)
    largest = outdir / f"out-{sizes[-1]}"
    projection = scale_projection.project(args, largest, recipe, runs[-1])
    result = judge(runs)
    result.update(recipe=str(recipe), recipe_text=recipe.read_text(), tokenizers=str(tokdir),
                  corpus={"generator": f"order-{args.order} word Markov chain over pydoc_data.topics",
                          "seed": args.seed, "docs_per_folder": scale_corpus.PER_FOLDER,
                          "chars_per_doc": [scale_corpus.MIN_CHARS, scale_corpus.MAX_CHARS]},
                  overrides=args.set, sizes=sizes, runs=runs, projection=projection)
    print_report(result)
    benchlib.write_result(args.name, result, Path(args.results))
    return 0


def judge(runs: list[dict]) -> dict:
    a, z = runs[0], runs[-1]
    tps = [r["steady"]["tokens_per_s"] or 0 for r in runs]
    rps = [r["steady"]["rows_per_s"] or 0 for r in runs]
    cur = [r["curation_rows_per_s"] or 0 for r in runs]
    drv = z["driver_peak_rss_mib"] / a["driver_peak_rss_mib"]
    tree = z["tree_peak_rss_mib"] / a["tree_peak_rss_mib"]
    flat = min(tps) / max(tps) if max(tps) else 0.0
    span_rows = z["candidate_rows"] / a["candidate_rows"]
    span_tokens = z["candidate_tokens"] / a["candidate_tokens"]
    return {
        "targets": {"driver_peak_largest_over_smallest": DRIVER_MAX, "tree_peak_largest_over_smallest": TREE_MAX,
                    "decode_tokenize_tokens_per_s_min_over_max": FLAT, "span_rows_and_tokens": 16,
                    "largest": ">= 50M tokens or >= 500k sample groups"},
        "span": {"rows": round(span_rows, 2), "tokens": round(span_tokens, 2),
                 "pass": bool(span_rows >= 16 and span_tokens >= 16),
                 "largest_tokens": z["candidate_tokens"], "largest_sample_groups": z["sample_groups"],
                 "largest_pass": bool(z["candidate_tokens"] >= 50e6 or z["sample_groups"] >= 500e3)},
        "driver_memory_ratio": round(drv, 3), "driver_memory_pass": bool(drv <= DRIVER_MAX),
        "tree_memory_ratio": round(tree, 3), "tree_memory_pass": bool(tree <= TREE_MAX),
        "throughput_tokens_min_over_max": round(flat, 3), "throughput_pass": bool(flat >= FLAT),
        "throughput_rows_min_over_max": round(min(rps) / max(rps), 3) if max(rps) else 0.0,
        # reported, not judged: small sizes pay curation's fixed costs (task start-up, a few shuffle rounds)
        "curation_rows_per_s_min_over_max": round(min(cur) / max(cur), 3) if max(cur) else 0.0,
        "curation_rows_per_s_largest_over_smallest": round(cur[-1] / cur[0], 3) if cur[0] else None,
        "driver_listing_plan_bytes": [r["driver_state"]["plan_bytes"] for r in runs],
        "load_average_1m_after": os.getloadavg()[0],
    }


def print_report(r: dict) -> None:
    print(f"\n{'docs':>7}{'tokens':>11}{'seqs':>8}{'rejects':>8}{'dedup%':>7}{'driver MiB':>11}{'tree MiB':>9}"
          f"{'wall s':>8}{'rows/s':>8}{'tokens/s':>10}{'curate rows/s':>14}")
    for x in r["runs"]:
        print(f"{x['docs']:>7}{x['candidate_tokens']:>11}{x['sequences']:>8}{x['rejects']['total']:>8}"
              f"{100 * x['dedup_drop_rate']:>7.2f}{x['driver_peak_rss_mib']:>11.0f}{x['tree_peak_rss_mib']:>9.0f}"
              f"{x['wall_s']:>8.1f}{x['steady']['rows_per_s'] or 0:>8.1f}{x['steady']['tokens_per_s'] or 0:>10.0f}"
              f"{x['curation_rows_per_s'] or 0:>14.0f}")
    print(f"span {r['span']['rows']}x rows, {r['span']['tokens']}x tokens (>= 16: {r['span']['pass']}); largest "
          f"{r['span']['largest_tokens']} tokens ({r['span']['largest_pass']})")
    print(f"driver peak largest/smallest {r['driver_memory_ratio']} (<= {DRIVER_MAX}: {r['driver_memory_pass']}); "
          f"tree peak {r['tree_memory_ratio']} (<= {TREE_MAX}: {r['tree_memory_pass']}); decode+tokenize tokens/s "
          f"slowest/fastest {r['throughput_tokens_min_over_max']} (>= {FLAT}: {r['throughput_pass']}); curation "
          f"rows/s slowest/fastest {r['curation_rows_per_s_min_over_max']} (reported)")
    print("driver's listing plan (tasks, bytes, tracemalloc): " + ", ".join(
        f"{x['docs']}: {x['driver_state']['listing_tasks']}, {x['driver_state']['plan_bytes']}" for x in r["runs"]))
    scale_projection.print_projection(r["projection"])
    sys.stdout.flush()


if __name__ == "__main__":
    sys.exit(main())
