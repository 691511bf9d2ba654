"""Issue 14: peak memory of `dataengine run pipelines/demo.yaml` over the hostile corpus, against a limit
(4 GiB for the whole process tree on a 2-core, 24 GB machine) and against its peer, the same run
over the demo corpus alone, measured side by side in one invocation.

The limit applies to the tree's proportional set size (PSS: a page shared by several processes,
such as torch's libraries in each worker, split among them), the memory the run holds. The sum of
RSS is recorded too; it counts each shared page once per process, over 1.5 GB more here.

    .venv/bin/python bench/hostile_memory.py                      # writes bench/results/hostile_memory.json
    .venv/bin/python bench/hostile_memory.py --results /tmp/hm    # a trial

Inputs: the demo corpus (real media, `benchlib.base_corpus`) and, for the hostile run, beside it the
corpus `tests/hostile/make_hostile.py` writes (every kind of `tests/hostile/`, with network references
pointing at a listener here that counts connections) plus a 27 KB H.264 clip declaring 3840x2160
frames (41 sampled frames: 1 GB of RGB if decoded at its native size). Each run is the real CLI in a
subprocess with its own Ray (`--address local`); the tree under it (driver, Ray's processes, the
workers and their decode children) is sampled every 0.1 s. Also recorded: wall time, rejects by
reason, and whether every input of the hostile corpus ended in exactly one place.
"""
from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import benchlib
from benchlib import ROOT, TreeRss, log

sys.path[:0] = [str(ROOT / "tests"), str(ROOT / "tests" / "hostile")]
LIMIT_MIB = 4096


def run(inputs: list[Path], out: Path, tokdir: Path) -> dict:
    for p in (out, out.parent / f".{out.name}.work", out.parent / f".{out.name}.staging"):
        shutil.rmtree(p, ignore_errors=True)
    cmd = [os.path.relpath(sys.executable, ROOT), "-m", "dataengine.cli", "run", "pipelines/demo.yaml",
           "--input", *map(str, inputs), "--output", str(out), "--tokenizers", str(tokdir), "--no-report",
           "--address", "local"]
    log(" ".join(cmd))
    t0 = time.time()
    proc = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            env={**os.environ, "DATAENGINE_PROGRESS": "0"})
    with TreeRss(every_s=0.1, root=proc.pid, pss=True) as rss:
        output, _ = proc.communicate()
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} exited {proc.returncode}:\n{output[-3000:]}")
    return {"command": " ".join(cmd), "wall_s": round(time.time() - t0, 1), **rss.as_dict()}


def accounted(out: Path, root: Path, expected: dict) -> dict:
    """Inputs of the hostile corpus in the lineage of a sequence and in rejects.parquet (each once)."""
    import polars as pl

    seq = pl.read_parquet(out / "parquet" / "*.parquet", columns=["source", "lineage"]).filter(
        pl.col("source") == root.name)
    rejects = pl.read_parquet(out / "rejects.parquet").filter(pl.col("source") == root.name)
    mine = Counter(lin["path"] for lins in seq["lineage"].to_list() for lin in lins) + Counter(rejects["path"].to_list())
    missing = sorted(p for p in expected if p not in mine and "#" not in p)
    twice = sorted(p for p, n in mine.items() if n > 1 and "#" not in p)
    reasons = Counter(rejects["reason"].to_list())
    return {"inputs": len(expected), "missing": missing, "in_two_places": twice, "reasons": dict(sorted(reasons.items()))}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--work", help="cache folder (default $DATAENGINE_BENCH_WORK or /tmp/dataengine-bench)")
    ap.add_argument("--results", default=str(benchlib.RESULTS))
    args = ap.parse_args(argv)
    from corpus_factory import tiny_4k_clip
    from hostile.kinds_v2 import Listener
    from make_hostile import make_hostile

    from dataengine import diskspace

    work = benchlib.work_dir(args.work)
    good, tokdir = benchlib.base_corpus(work), benchlib.tokenizers(work)
    hostile_root = work / "hostile-corpus" / "hostile"
    shutil.rmtree(hostile_root.parent, ignore_errors=True)
    listener = Listener()
    h = make_hostile(hostile_root, port=listener.port)
    tiny_4k_clip(hostile_root / "v4k" / "tiny_4k.mp4")
    h.expected["v4k/tiny_4k.mp4"] = "ok"
    size = diskspace.tree_bytes(hostile_root)  # (a path past the system's limit is among them)
    peer = run([good], work / "out-good", tokdir)
    hostile = run([good, hostile_root], work / "out-hostile", tokdir)
    acc = accounted(work / "out-hostile", hostile_root, h.expected)
    result = {
        "limit_tree_pss_peak_mib": LIMIT_MIB,
        "hostile_corpus": {"inputs": len(h.expected), "bytes": size, **acc},
        "connections_offered": len(listener.connections),
        "runs": {"demo_corpus": peer, "demo_plus_hostile": hostile},
        "tree_pss_peak_hostile_over_demo": round(hostile["peak_tree_pss_mib"] / peer["peak_tree_pss_mib"], 3),
        "pass": (hostile["peak_tree_pss_mib"] <= LIMIT_MIB and not listener.connections
                 and not any(acc[k] for k in ("missing", "in_two_places"))),
    }
    log(f"peak tree PSS: demo {peer['peak_tree_pss_mib']:.0f} MiB, demo + hostile {hostile['peak_tree_pss_mib']:.0f} MiB "
        f"(limit {LIMIT_MIB}; RSS sums {peer['peak_tree_rss_mib']:.0f} / {hostile['peak_tree_rss_mib']:.0f}); largest process {hostile['peak_single_process_rss_mib']:.0f} MiB; "
        f"connections {len(listener.connections)}; missing {len(result['hostile_corpus']['missing'])}")
    benchlib.write_result("hostile_memory", result, Path(args.results))
    return 0 if result["pass"] else 1


if __name__ == "__main__":
    sys.exit(main())
