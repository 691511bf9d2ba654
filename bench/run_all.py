"""Run every benchmark, print ONE table (benchmark, measured ratio, target, pass/fail), write summary.json.

    .venv/bin/python bench/run_all.py            # what `make bench` runs (~30-40 min on 2 cores, scale_out included)
    .venv/bin/python bench/run_all.py --quick    # tiny sizes, a smoke test (a few minutes)
    .venv/bin/python bench/run_all.py --only writers pipeline_efficiency

Each benchmark runs as its own process and writes ``RESULTS/<name>.json`` (the
machine, package versions, the exact command). Every number in the table is a
ratio of two things measured side by side in the same run. The corpus, its
copies and the fitted tokenizers are cached in ``--work`` (default
``/tmp/dataengine-bench``); the first run fits the tokenizers (or copies them
from ``tokenizers/demo`` when `make demo` has fitted them with the same recipe).
``--quick`` writes to ``WORK/results-quick`` so it never overwrites the
committed full results in ``bench/results``.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import benchlib
from benchlib import ROOT, log

PY = sys.executable
# The engine's default execution settings (tokenizer pool sized to the CPUs, decode fused into it), where
# pipelines/demo.yaml still pins one tokenizer actor; a no-op once the recipe says `tokenize_actors: 0`.
EXECUTION = ["--set", "execution.tokenize_actors=0"]


def _tok_rows(doc: dict) -> list[dict]:
    rows = []
    for device, roles in doc.get("results", {}).items():
        for role, r in roles.items():
            if "encode" not in r:
                rows.append(_row(f"tokenizer {role} ({device})", None, "-", None, r.get("error", "no items")))
                continue
            e = r["encode"]
            ok = e["batched_speedup"] >= 0.9 and e["batched_codes_identical"] == 1.0
            rows.append(_row(f"tokenizer {role} encode, batched/one-at-a-time ({device})", e["batched_speedup"],
                             ">= 0.9, same codes", ok,
                             f"{e['batched']['items_per_s']:.0f} items/s, {e['batched']['tokens_per_s']:.0f} tokens/s"))
    return rows


def _scale_rows(d: dict) -> list[dict]:
    runs, span = d["runs"], d["span"]
    sizes = f"{runs[0]['docs']}..{runs[-1]['docs']} docs, {span['tokens']:.0f}x tokens"
    return [
        _row(f"scale-out: driver peak RSS largest / smallest ({sizes})", d["driver_memory_ratio"], "<= 1.2",
             d["driver_memory_pass"], ", ".join(f"{r['docs']}: {r['driver_peak_rss_mib']:.0f}" for r in runs) + " MiB"),
        _row("scale-out: tree peak RSS largest / smallest (driver + Ray)", d["tree_memory_ratio"], "<= 1.5",
             d["tree_memory_pass"], ", ".join(f"{r['docs']}: {r['tree_peak_rss_mib']:.0f}" for r in runs) + " MiB"),
        _row("scale-out: decode+tokenize tokens/s slowest/fastest", d["throughput_tokens_min_over_max"], ">= 0.85",
             d["throughput_pass"] and span["pass"] and span["largest_pass"],
             ", ".join(f"{r['docs']}: {r['steady']['tokens_per_s'] or 0:.0f}" for r in runs) + " tokens/s"
             + ("" if span["pass"] and span["largest_pass"] else "; sizes span < 16x or top < 50M tokens")),
    ]


def _row(name: str, ratio, target: str, ok, note: str = "") -> dict:
    return {"benchmark": name, "ratio": ratio, "target": target, "pass": ok, "note": note}


@dataclass
class Bench:
    name: str
    cmd: Callable[[], list[str]]   # built when the bench starts (it may use an earlier bench's output)
    json: Path | None              # where it writes its JSON; None: the last line of its stdout
    rows: Callable[[dict], list[dict]]
    timeout: int
    quick: bool = True             # part of --quick (False: long, run only when named with --only)


def plan(args, work: Path, results: Path) -> list[Bench]:
    q = args.quick
    out_dir = work / "out-pipeline"  # pipeline_efficiency's output: real shards for train_throughput
    tok_json = results / ("tokenizer_throughput_gpu.json" if _cuda() else "tokenizer_throughput_cpu.json")
    common = ["--work", str(work), "--results", str(results)]
    return [
        Bench("pipeline_efficiency", lambda: [PY, "bench/pipeline_efficiency.py", "--copies",
                                              "1" if q else str(args.copies), "--ideal-runs", "1" if q else "2",
                                              "--keep-output", str(out_dir), *common, *EXECUTION],
              results / "pipeline_efficiency.json", lambda d: [
                  _row("pipeline efficiency: steady-state run / (ideal 1-process loop x CPUs)", d["ratio"], ">= 0.8",
                       d["pass"], f"{d['pipeline']['steady'].get('items_per_s', 0):.1f} items/s, "
                       f"{d['pipeline']['steady'].get('mib_per_s', 0):.2f} MiB/s, {d['ideal']['cpus']:g} CPUs; "
                       f"Ray start {100 * d['ray_start_share_of_run']:.0f}% of the run")], 2400),
        Bench("writers", lambda: [PY, "bench/writers.py", "--rows", "2000" if q else "10000",
                                  "--repeat", "3" if q else "7", *common,
                                  *(["--shards", str(out_dir)] if (out_dir / "manifest.json").is_file() else [])],
              results / "writers.json", lambda d: [
                  _row("writers: Parquet, ours vs pyarrow.parquet.write_table (speed)", d["parquet"]["ratio"],
                       ">= 0.8", d["parquet"]["ratio"] >= 0.8,
                       f"{d['parquet']['ours_mib_per_s']} vs {d['parquet']['plain_mib_per_s']} MiB/s"),
                  _row("writers: WebDataset, ours vs webdataset.ShardWriter (speed)", d["webdataset"]["ratio"],
                       ">= 0.8", d["webdataset"]["ratio"] >= 0.8,
                       f"{d['webdataset']['ours_mib_per_s']} vs {d['webdataset']['plain_mib_per_s']} MiB/s")], 900),
        # 1x = 4 demo-corpus copies: the smallest corpus whose run is long enough that Ray start-up and the
        # pool's fill and drain are small beside it (at 1 copy they are half the run, so "1x" read slow)
        Bench("scaling", lambda: [PY, "bench/scaling.py", "--sizes", *(["1", "2"] if q else ["4", "16", "32"]),
                                  *common, *EXECUTION],
              results / "scaling.json", lambda d: [
                  _row(f"scaling: throughput 1x..{d['sizes'][-1] // d['sizes'][0]}x corpus ({d['sizes'][0]}.."
                       f"{d['sizes'][-1]} demo copies), steady rows/s slowest/fastest", d["throughput_min_over_max"],
                       ">= 0.85", d["throughput_pass"],
                       ", ".join(f"{r['copies']}c {r['steady_rows_per_s']:.0f}" for r in d["runs"]) + " rows/s"),
                  _row(f"scaling: peak memory {d['sizes'][-1] // d['sizes'][0]}x / 1x (driver + Ray workers)",
                       d["memory_largest_over_smallest"], "<= 1.3", d["memory_pass"],
                       ", ".join(f"{r['copies']}c {r['memory']['peak_tree_rss_mib']:.0f}" for r in d["runs"])
                       + " MiB")], 3000),
        # issue 13: real `dataengine run` subprocesses on generated text corpora 16x apart (~70M tokens at the
        # top), driver / tree memory and throughput per size, and the 1B-sample projection; long: not in --quick
        Bench("scale_out", lambda: [PY, "bench/scale_out.py", "--docs",
                                    *(["500", "2000", "8000"] if q else [str(d) for d in args.scale_docs]), *common],
              results / "scale_out.json", _scale_rows, 7200, quick=False),
        Bench("tokenizer_throughput", lambda: [PY, "bench/tokenizer_throughput.py", "--tokenizers",
                                               str(work / "tokenizers"), "--input", str(work / "corpus-base"),
                                               "--json", str(tok_json),
                                               *(["--max-items", "16", "--repeat", "1"] if q else [])],
              tok_json, _tok_rows, 1800),
        Bench("dedup_vs_datasketch", lambda: [PY, "bench/dedup_vs_datasketch.py", "--json",
                                              str(results / "dedup_vs_datasketch.json"),
                                              *(["--docs", "2000", "--planted", "200"] if q else [])],
              results / "dedup_vs_datasketch.json", lambda d: [
                  _row("dedup: datasketch time / ours (MinHash + LSH)", d["speedup"], ">= 1.0, recall >= theirs",
                       d["speedup"] >= 1.0 and d["ours"]["verified"]["recall"]
                       >= d["datasketch"]["verified"]["recall"] - 0.02,
                       f"recall {d['ours']['verified']['recall']:.3f} vs {d['datasketch']['verified']['recall']:.3f}")],
              1200),
        Bench("train_throughput", lambda: [PY, "bench/train_throughput.py", "--json",
                                           str(results / "train_throughput_cpu.json"),
                                           *(["--shards", str(out_dir)] if (out_dir / "manifest.json").is_file() else []),
                                           *(["--steps", "8", "--warmup", "2", "--loader-batches", "50"] if q else [])],
              results / "train_throughput_cpu.json", lambda d: [
                  _row("training: loader tokens/s / training tokens/s", d["loader_over_training"], ">= 10",
                       d["loader_at_least_10x"],
                       f"train {d['training']['tokens_per_s']:.0f} tokens/s ({d['shards']['kind']} shards)")], 1200),
        # issue 14: the hostile corpus's memory against a limit and against the demo corpus alone; the fuzzer
        Bench("hostile_memory", lambda: [PY, "bench/hostile_memory.py", *common],
              results / "hostile_memory.json", lambda d: [
                  _row("hostile inputs: tree peak PSS with / without them (demo recipe)",
                       d["tree_pss_peak_hostile_over_demo"], "<= 4096 MiB in all, no input lost", d["pass"],
                       f"{d['runs']['demo_plus_hostile']['peak_tree_pss_mib']:.0f} MiB PSS "
                       f"({d['runs']['demo_plus_hostile']['peak_tree_rss_mib']:.0f} MiB RSS sum); "
                       f"{d['hostile_corpus']['inputs']} hostile inputs, {d['connections_offered']} connections")],
              1800),
        Bench("fuzz", lambda: [PY, "bench/fuzz.py", *(["--per-seed", "10", "--rounds", "1"] if q else []), *common],
              results / "fuzz.json", lambda d: [
                  _row("fuzzer: mutants with a crash, hang, blow-up or lost input / mutants",
                       round(sum(d["bugs_by_kind"].values()) / d["mutants"], 4), "0", d["pass"],
                       f"{d['mutants']} mutants; generic decoder_error {d['generic_decoder_error']}; "
                       f"peak {d['peak_tree_rss_mib']:.0f} MiB")], 3600),
        Bench("video_tokenizers", lambda: [PY, "bench/video_tokenizers.py", str(work / "corpus-base"),
                                           "--tokenizers", str(work / "video-tokenizers"), "--quiet"],
              None, lambda d: [
                  _row("video: causal_video / frames, tokens per second", round(
                      d["causal_video"]["tokens_per_second"] / d["frames"]["tokens_per_second"], 3), "<= 0.5",
                      d["causal_video"]["tokens_per_second"] <= 0.5 * d["frames"]["tokens_per_second"],
                      f"PSNR {d['causal_video']['psnr']} vs {d['frames']['psnr']} dB"),
                  _row("video: PSNR drop, causal_video vs frames (dB)",
                       round(d["frames"]["psnr"] - d["causal_video"]["psnr"], 2), "<= 1.0",
                       d["frames"]["psnr"] - d["causal_video"]["psnr"] <= 1.0, "3 clips of the demo corpus")], 900),
    ]


def _cuda() -> bool:
    try:
        import torch

        return torch.cuda.is_available()
    except ImportError:
        return False


def _video_tokenizers(work: Path) -> None:
    """video_tokenizers.py --tokenizers wants DIR/image and DIR/causal_video: link the fitted ones."""
    d = work / "video-tokenizers"
    d.mkdir(exist_ok=True)
    for name, target in (("image", "image"), ("causal_video", "video")):
        if not (d / name).exists():
            (d / name).symlink_to(work / "tokenizers" / target)


def run_one(b: Bench, results: Path) -> tuple[list[dict], float]:
    cmd = b.cmd()
    t0 = time.time()
    log(f"\n=== {b.name}: {' '.join(cmd)}")
    try:
        proc = subprocess.run(cmd, cwd=ROOT, stdout=subprocess.PIPE, text=True, timeout=b.timeout)
        out, rc = proc.stdout, proc.returncode
    except subprocess.TimeoutExpired as e:
        out, rc = e.stdout.decode() if isinstance(e.stdout, bytes) else (e.stdout or ""), f"timeout {b.timeout}s"
    sys.stderr.write(out[-4000:])
    seconds = time.time() - t0
    try:
        if b.json is None:  # the JSON is its last line of output: store it like the others
            doc = json.loads(out.strip().splitlines()[-1])
            (results / f"{b.name}.json").write_text(json.dumps(
                {"benchmark": b.name, "command": " ".join(os.path.relpath(c, ROOT) if c == PY else c for c in cmd),
                 "machine": benchlib.machine(), "versions": benchlib.versions(), **doc}, indent=1) + "\n")
        else:
            if b.json.stat().st_mtime < t0:
                raise ValueError(f"{b.json} was not rewritten")
            doc = json.loads(b.json.read_text())
        return [{**r, "bench": b.name} for r in b.rows(doc)], seconds
    except (ValueError, KeyError, IndexError, OSError) as e:
        return [{**_row(b.name, None, "-", False, f"failed (exit {rc}): {type(e).__name__}: {e}"), "bench": b.name}], \
            seconds


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="tiny sizes (smoke test); results in WORK/results-quick")
    ap.add_argument("--work", help=f"cache folder (default {benchlib.DEFAULT_WORK})")
    ap.add_argument("--results", help="results folder (default bench/results, or WORK/results-quick)")
    ap.add_argument("--copies", type=int, default=16,
                    help="demo-corpus copies for pipeline_efficiency (16: Ray start-up well under 10%% of the run)")
    ap.add_argument("--scale-docs", type=int, nargs="+", default=[7000, 28000, 112000],
                    help="scale_out.py sizes in documents (default 7000 28000 112000)")
    ap.add_argument("--only", nargs="+", help="run only these benchmarks")
    ap.add_argument("--skip", nargs="+", default=[], help="skip these benchmarks")
    ap.add_argument("--markdown", nargs="?", const=str(benchlib.RESULTS / "summary.json"), metavar="SUMMARY",
                    help="only print the table of a summary.json (default bench/results/summary.json) as Markdown")
    args = ap.parse_args(argv)
    if args.markdown:
        print(markdown_table(json.loads(Path(args.markdown).read_text())["rows"]))
        return 0

    work = benchlib.work_dir(args.work)
    results = Path(args.results) if args.results else (work / "results-quick" if args.quick else benchlib.RESULTS)
    results.mkdir(parents=True, exist_ok=True)
    t_start = time.time()
    benchlib.tokenizers(work)  # corpus + tokenizers, once, outside every timing
    _video_tokenizers(work)
    load_before = os.getloadavg()
    rows, seconds = [], {}
    for b in plan(args, work, results):
        if (args.only and b.name not in args.only) or b.name in args.skip:
            continue
        if args.quick and not b.quick and not args.only:
            continue
        got, seconds[b.name] = run_one(b, results)
        rows += got
    old = results / "summary.json"
    if (args.only or args.skip) and old.is_file():  # a partial rerun: keep the other benchmarks' rows
        prev = json.loads(old.read_text())
        rows = [r for r in prev.get("rows", []) if (r.get("bench") or _bench_of(r["benchmark"])) not in seconds] + rows
        seconds = {**{k: v for k, v in prev.get("seconds", {}).items() if k not in seconds}, **seconds}
    summary = {"quick": args.quick, "seconds": {k: round(v, 1) for k, v in seconds.items()},
               "total_seconds": round(time.time() - t_start, 1),
               "load_avg_before": [round(x, 2) for x in load_before],
               "load_avg_after": [round(x, 2) for x in os.getloadavg()], "rows": rows}
    print_table(rows)
    print(f"\n{sum(r['pass'] is True for r in rows)}/{len(rows)} targets met in {summary['total_seconds']:.0f}s; "
          f"load average before {summary['load_avg_before'][0]}, after {summary['load_avg_after'][0]} "
          f"({os.cpu_count()} CPUs)")
    benchlib.write_result("summary", summary, results)
    return 0 if all(r["pass"] for r in rows) else 1


def _bench_of(row_name: str) -> str:
    """The benchmark a table row came from (rows of older summaries carry no `bench`)."""
    prefixes = {"writers": "writers", "pipeline efficiency": "pipeline_efficiency", "scaling": "scaling",
                "scale-out": "scale_out",
                "tokenizer": "tokenizer_throughput", "dedup": "dedup_vs_datasketch", "training": "train_throughput",
                "video": "video_tokenizers"}
    return next((b for p, b in prefixes.items() if row_name.startswith(p)), row_name)


def print_table(rows: list[dict]) -> None:
    w = max(len(r["benchmark"]) for r in rows) if rows else 10
    print(f"\n{'benchmark':<{w}}  {'measured':>9}  {'target':<26}{'result':<7}note")
    for r in rows:
        m = "-" if r["ratio"] is None else f"{r['ratio']:.3g}"
        res = {True: "pass", False: "FAIL", None: "-"}[r["pass"]]
        print(f"{r['benchmark']:<{w}}  {m:>9}  {r['target']:<26}{res:<7}{r['note']}")


def markdown_table(rows: list[dict]) -> str:
    lines = ["| benchmark | measured | target | result | note |", "|---|---:|---|---|---|"]
    for r in rows:
        m = "-" if r["ratio"] is None else f"{r['ratio']:.3g}"
        res = {True: "pass", False: "**fail**", None: "-"}[r["pass"]]
        lines.append(f"| {r['benchmark']} | {m} | {r['target']} | {res} | {r['note']} |")
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
