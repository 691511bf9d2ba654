"""Same inputs, same seed, same bytes: the demo job at a base commit against the working tree.

    .venv/bin/python bench/same_output.py --base 6d514ff

The check a refactor must pass (torchtitan's "same loss under a fixed seed", for a data
engine): the base commit's tree is exported with `git archive`; the base writes the demo
corpus (its own `dataengine demo-corpus`, so both sides read the very same files); then
each side, in its own processes (PYTHONPATH = that tree, so Ray workers import that
tree's code too), fits the demo recipe's tokenizers, runs the demo job and decodes 12
sequences back to media (`inspect --decode`). Every output file is compared by sha256.

A file whose bytes differ is compared again after removing what a NEW modality adds,
which is the one allowed difference (JSON files are also compared less the manifest's `code`
section, which names the commit, less timings, keys ending in _seconds or _per_s, and less file
digests and sizes, since every file is compared on its own): quality-stat fields of the `stats` struct that the
base does not know (all null on these inputs), vocabulary specials the base does not
know, and recipe defaults for tasks the base does not know. Anything else is a
difference, and the exit status is 1. The trainer's half of the rule is
`tests/train/test_golden.py` (a committed loss curve under a fixed seed).

Results: `bench/results/same_output.json` (per file: identical | identical_less_new_modality
| differs, with the first difference). Takes about 11 minutes on 2 cores (two fits).
"""
from __future__ import annotations

import argparse
import hashlib
import io
import json
import os
import subprocess
import sys
import tarfile
import time
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

ROOT = Path(__file__).resolve().parents[1]
RESULT = ROOT / "bench" / "results" / "same_output.json"
IGNORED: dict[str, str] = {}  # file name -> why it is not compared (none: timings are left out of JSON)


def sh(cmd: list[str], tree: Path, log: Path) -> float:
    env = {**os.environ, "PYTHONPATH": str(tree), "DATAENGINE_PROGRESS": "0", "RAY_USAGE_STATS_ENABLED": "0"}
    t0 = time.time()
    with open(log, "a") as f:
        f.write(f"$ {' '.join(cmd)}\n")
        f.flush()
        proc = subprocess.run(cmd, cwd=tree, env=env, stdout=f, stderr=subprocess.STDOUT)
    if proc.returncode:
        sys.exit(f"{' '.join(cmd)} failed in {tree} (exit {proc.returncode}); see {log}")
    return time.time() - t0


def export(ref: str, dest: Path) -> str:
    sha = subprocess.check_output(["git", "rev-parse", ref], cwd=ROOT, text=True).strip()
    dest.mkdir(parents=True, exist_ok=True)
    data = subprocess.check_output(["git", "archive", sha], cwd=ROOT)
    with tarfile.open(fileobj=io.BytesIO(data)) as tar:
        tar.extractall(dest, filter="data")
    return sha


def job(tree: Path, corpus: Path, work: Path, log: Path) -> dict:
    de = [sys.executable, "-m", "dataengine.cli"]
    recipe = str(tree / "pipelines" / "demo.yaml")
    seconds = {"fit": sh(de + ["fit", recipe, "--input", str(corpus), "--tokenizers", str(work / "tok"), "--force"],
                         tree, log)}
    seconds["run"] = sh(de + ["run", recipe, "--input", str(corpus), "--tokenizers", str(work / "tok"),
                              "--output", str(work / "out"), "--no-report", "--address", "local"], tree, log)
    seconds["inspect"] = sh(de + ["inspect", str(work / "out"), "--decode", "12", "--to", str(work / "decoded")],
                            tree, log)
    return seconds


def files(folder: Path) -> dict[str, str]:
    out = {}
    for p in sorted(folder.rglob("*")):
        rel = p.relative_to(folder).as_posix()
        if p.is_file() and not rel.startswith("out/cache/"):
            out[rel] = hashlib.sha256(p.read_bytes()).hexdigest()
    return out


def _drop_new_stats(table: pa.Table, known: set[str]) -> tuple[pa.Table, list[str]]:
    """The table with struct fields of `stats` that the base has no name for removed (if all null)."""
    if "stats" not in table.column_names:
        return table, []
    col = table.column("stats").combine_chunks()
    keep, dropped = [], []
    for i, f in enumerate(col.type):
        child = col.field(i)
        if f.name in known or child.null_count != len(child):
            keep.append((f, child))
        else:
            dropped.append(f.name)
    stats = pa.StructArray.from_arrays([c for _, c in keep], fields=[f for f, _ in keep], mask=col.is_null())
    return table.set_column(table.column_names.index("stats"), "stats", stats), dropped


def compare_parquet(a: Path, b: Path) -> dict:
    ta, tb = pq.read_table(a), pq.read_table(b)
    known = {f.name for f in ta.schema.field("stats").type} if "stats" in ta.column_names else set()
    tb2, dropped = _drop_new_stats(tb, known)
    if ta.equals(tb2):
        return {"status": "identical_less_new_modality", "dropped_stats": dropped}
    for name in ta.column_names:
        if name not in tb2.column_names or not ta.column(name).equals(tb2.column(name)):
            return {"status": "differs", "column": name}
    return {"status": "differs", "column": "(schema)"}


def compare_tar(a: Path, b: Path) -> dict:
    """WebDataset shards: the same members in the same order, each identical, or (JSON) equal less keys
    only the new side has."""
    with tarfile.open(a) as ta, tarfile.open(b) as tb:
        ma, mb = ta.getmembers(), tb.getmembers()
        if [m.name for m in ma] != [m.name for m in mb]:
            return {"status": "differs", "at": "member names"}
        added: set[str] = set()
        for x, y in zip(ma, mb):
            bx, by = ta.extractfile(x).read(), tb.extractfile(y).read()
            if bx == by:
                continue
            if not x.name.endswith(".json"):
                return {"status": "differs", "at": x.name}
            r = _compare_docs(json.loads(bx), json.loads(by))
            if r["status"] == "differs":
                return {"status": "differs", "at": f"{x.name}: {r['at']}"}
            added.update(r["added_keys"])
    return {"status": "identical_less_new_modality", "added_keys": sorted(added)}


def compare_json(a: Path, b: Path) -> dict:
    """Equal once keys only the new side has (a new modality's specials, tasks, templates) are removed."""
    return _compare_docs(json.loads(a.read_text()), json.loads(b.read_text()))


def _compare_docs(da, db) -> dict:
    added: list[str] = []

    def walk(x, y, path=""):
        if isinstance(x, dict) and isinstance(y, dict):
            out = {}
            for k in y:
                if k in x:
                    out[k] = walk(x[k], y[k], f"{path}.{k}")
                else:
                    added.append(f"{path}.{k}")
            return out
        return y

    same = walk(da, db)
    diff = _first_diff(_facts(da), _facts(same))
    if diff is None:
        return {"status": "identical_less_new_modality", "added_keys": added}
    return {"status": "differs", "at": diff}


def _facts(x):
    """A JSON document less what says which code ran and how long things took (not outputs): the manifest's
    `code` (commit, dirty), timings (keys ending in _seconds or _per_s), and sha256 digests and byte sizes
    (of files and of the recipe, each compared on its own: a shard by its content, the recipe section by
    section)."""
    if isinstance(x, dict):
        return {k: _facts(v) for k, v in x.items()
                if k not in ("code", "sha256", "bytes") and not k.endswith(("_seconds", "_per_s"))}
    if isinstance(x, list):
        return [_facts(v) for v in x]
    return x


def _first_diff(x, y, path="") -> str | None:
    if isinstance(x, dict) and isinstance(y, dict):
        for k in sorted(set(x) | set(y)):
            if k not in x or k not in y:
                return f"{path}.{k}"
            d = _first_diff(x[k], y[k], f"{path}.{k}")
            if d:
                return d
        return None
    return None if x == y else path or "."


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--base", required=True, help="the commit before the change (a git ref)")
    ap.add_argument("--work", default="/tmp/dataengine-same-output")
    ap.add_argument("--compare-only", action="store_true", help="compare the outputs already in --work again")
    args = ap.parse_args()
    work = Path(args.work)
    if not args.compare_only:
        subprocess.run(["rm", "-rf", str(work)], check=True)
    base_tree = work / "base-tree"
    base_sha = subprocess.check_output(["git", "rev-parse", args.base], cwd=ROOT, text=True).strip()
    head_sha = subprocess.check_output(["git", "rev-parse", "HEAD"], cwd=ROOT, text=True).strip()
    dirty = bool(subprocess.check_output(["git", "status", "--porcelain", "--untracked-files=no"], cwd=ROOT,
                                         text=True).strip())
    log = work / "log.txt"
    corpus = work / "corpus"
    if args.compare_only:
        seconds = json.loads((work / "seconds.json").read_text())
    else:
        export(base_sha, base_tree)
        sh([sys.executable, "-m", "dataengine.cli", "demo-corpus", str(corpus), "--seed", "0"], base_tree, log)
        seconds = {"base": job(base_tree, corpus, work / "base", log), "head": job(ROOT, corpus, work / "head", log)}
        (work / "seconds.json").write_text(json.dumps(seconds))
    fa, fb = files(work / "base"), files(work / "head")
    report: dict[str, dict] = {}
    for rel in sorted(set(fa) | set(fb)):
        if rel not in fa or rel not in fb:
            report[rel] = {"status": "only_in_" + ("head" if rel in fb else "base")}
        elif fa[rel] == fb[rel]:
            report[rel] = {"status": "identical"}
        elif Path(rel).name in IGNORED:
            report[rel] = {"status": "not_compared", "why": IGNORED[Path(rel).name]}
        elif rel.endswith(".parquet"):
            report[rel] = compare_parquet(work / "base" / rel, work / "head" / rel)
        elif rel.endswith(".json"):
            report[rel] = compare_json(work / "base" / rel, work / "head" / rel)
        elif rel.endswith(".tar"):
            report[rel] = compare_tar(work / "base" / rel, work / "head" / rel)
        else:
            report[rel] = {"status": "differs"}
    counts: dict[str, int] = {}
    for r in report.values():
        counts[r["status"]] = counts.get(r["status"], 0) + 1
    bad = {k: v for k, v in report.items() if v["status"] in ("differs",) or v["status"].startswith("only_in")}
    result = {"command": " ".join([Path(sys.executable).name] + sys.argv), "base": base_sha, "head": head_sha,
              "head_dirty": dirty, "seconds": seconds, "counts": counts, "passed": not bad,
              "differences": bad, "files": report}
    RESULT.write_text(json.dumps(result, indent=1, sort_keys=True) + "\n")
    print(json.dumps({k: result[k] for k in ("base", "head", "head_dirty", "counts", "passed", "differences")},
                     indent=1))
    return 0 if not bad else 1


if __name__ == "__main__":
    sys.exit(main())
