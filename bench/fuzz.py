"""Issue 14: the mutation fuzzer at scale: thousands of mutants of every kind of valid media, decoded as
a run decodes them (`DecodeStage` in its watched child, the demo recipe's caps and budgets), with zero
crashes, hangs, blow-ups or lost inputs the target, and the peak memory of this process and its decode
child reported.

    .venv/bin/python bench/fuzz.py                          # 3 rounds x 100 mutants per seed file (~10,000)
    .venv/bin/python bench/fuzz.py --per-seed 20 --rounds 1 --results /tmp/fz

The mutations and the check are `tests/hostile/fuzz.py` (its quick set runs in `make test`). Each round
uses its own seed (0, 1, 2, ...) and a fresh folder.
"""
from __future__ import annotations

import argparse
import shutil
import sys
import time
from collections import Counter
from pathlib import Path

import benchlib
from benchlib import ROOT, TreeRss, log

sys.path[:0] = [str(ROOT / "tests")]


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--per-seed", type=int, default=100)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--work", help="cache folder (default $DATAENGINE_BENCH_WORK or /tmp/dataengine-bench)")
    ap.add_argument("--results", default=str(benchlib.RESULTS))
    args = ap.parse_args(argv)
    from hostile.fuzz import check, seeds, write_corpus

    from dataengine.pipeline.budget import WatchedDecode
    from dataengine.pipeline.decode_stage import DecodeStage
    from dataengine.recipe import load_recipe
    from dataengine.pipeline.decode_stage import decode_stage_for

    work = benchlib.work_dir(args.work) / "fuzz"
    shutil.rmtree(work, ignore_errors=True)
    seed_root = seeds(work / "seeds")
    recipe = load_recipe(ROOT / "pipelines" / "demo.yaml", inputs=[str(seed_root)])
    stage: DecodeStage = decode_stage_for(recipe)
    rounds, bugs, reasons, mutations = [], [], Counter(), Counter()
    with TreeRss(every_s=0.05, pss=True) as rss:
        watched = WatchedDecode(stage, recipe.execution.max_unit_crashes)
        try:
            for k in range(args.rounds):
                folder = work / f"round-{k}"
                made = write_corpus(seed_root, folder, args.per_seed, seed=k)
                t0 = time.time()
                r = check(folder, stage, watched)
                wall = time.time() - t0
                rounds.append({"seed": k, "mutants": len(made), "inputs": r["inputs"], "units": r["units"],
                               "bugs": len(r["bugs"]), "decode_s": round(wall, 1),
                               "units_per_s": round(r["units"] / wall, 1)})
                log(f"round {k}: {len(made)} mutants, {r['units']} units in {wall:.0f} s, {len(r['bugs'])} bugs")
                bugs += [{**b, "round": k} for b in r["bugs"]]
                reasons.update(r["reasons"])
                mutations.update(made.values())
                shutil.rmtree(folder, ignore_errors=True)
        finally:
            watched.close()
    result = {"mutants": sum(r["mutants"] for r in rounds), "mutations": dict(mutations), "rounds": rounds,
              "bugs_by_kind": dict(Counter(b["bug"] for b in bugs)), "bugs": bugs[:50],
              "reasons": dict(sorted(reasons.items())),
              "generic_decoder_error": reasons.get("decoder_error", 0), **rss.as_dict(),
              "budget": {"wall_s": stage.decode.budget.wall_s, "cpu_s": stage.decode.budget.cpu_s,
                         "memory_mb": stage.decode.budget.memory_mb},
              "pass": not bugs}
    log(f"{result['mutants']} mutants: bugs {result['bugs_by_kind'] or 'none'}; generic decoder_error "
        f"{result['generic_decoder_error']}; peak PSS {result['peak_tree_pss_mib']:.0f} MiB")
    benchlib.write_result("fuzz", result, Path(args.results))
    return 0 if result["pass"] else 1


if __name__ == "__main__":
    sys.exit(main())
