"""Our vectorised MinHash + LSH (dataengine.curate.minhash) vs datasketch's MinHash/MinHashLSH.

Same documents, same shingles (token n-grams hashed by `minhash.shingle_hashes`; datasketch
gets each shingle's top 32 bits through an identity `hashfunc`, so it skips SHA-1 and
only the MinHash + LSH work is compared), same num_perm and the same (bands, rows).

Corpus: `--docs` synthetic token documents (Zipf-distributed ids over an 8k vocabulary,
lognormal lengths), of which `--planted` are near-copies of another document with a
fraction of tokens substituted (uniform in [0, `--max-edit`]). Ground truth: the exact
Jaccard of the shingle sets of every planted pair and of every pair either method reports
(random documents share no 5-gram, so no other pair can reach the threshold).

    .venv/bin/python bench/dedup_vs_datasketch.py --json bench/results/dedup_vs_datasketch.json
"""
from __future__ import annotations

import argparse
import json
import platform
import sys
import time
from pathlib import Path

import numpy as np

from dataengine.curate import minhash


def make_corpus(n_docs: int, n_planted: int, max_edit: float, seed: int):
    rng = np.random.default_rng(seed)
    vocab = 8192
    p = 1.0 / np.arange(1, vocab + 1) ** 1.1
    p /= p.sum()
    n_orig = n_docs - n_planted
    lengths = np.clip(rng.lognormal(5.5, 0.6, n_orig).astype(int), 20, 4000)
    docs = [rng.choice(vocab, size=L, p=p) for L in lengths]
    sources = rng.choice(n_orig, n_planted, replace=False)
    for s in sources:
        d = docs[s].copy()
        edit = rng.random(len(d)) < rng.uniform(0, max_edit)
        d[edit] = rng.choice(vocab, size=int(edit.sum()), p=p)
        docs.append(d)
    planted = np.stack([sources, np.arange(n_orig, n_docs)], axis=1)
    return docs, planted


def exact_jaccard(sets, pairs):
    return np.array([len(sets[i] & sets[j]) / max(len(sets[i] | sets[j]), 1) for i, j in pairs])


def ours(hashes, counts, num_perm, bands, rows, threshold, family):
    t0 = time.perf_counter()
    sig = minhash.MinHasher(num_perm, seed=0, family=family).signatures(hashes, counts)
    t1 = time.perf_counter()
    i, j = minhash.candidate_pairs(minhash.band_keys(sig, bands, rows))
    est = minhash.agreement(sig, i, j)
    t2 = time.perf_counter()
    ok = est >= threshold
    return {"candidates": set(zip(i.tolist(), j.tolist())), "verified": set(zip(i[ok].tolist(), j[ok].tolist())),
            "seconds_signatures": t1 - t0, "seconds_lsh_verify": t2 - t1, "seconds": t2 - t0}


def datasketch_run(shingle_lists, num_perm, bands, rows, threshold):
    from datasketch import MinHash, MinHashLSH

    t0 = time.perf_counter()
    mhs = MinHash.bulk(shingle_lists, num_perm=num_perm, seed=0, hashfunc=lambda x: x)
    t1 = time.perf_counter()
    lsh = MinHashLSH(threshold=threshold, num_perm=num_perm, params=(bands, rows))
    with lsh.insertion_session() as session:
        for k, m in enumerate(mhs):
            session.insert(k, m, check_duplication=False)
    cands = set()
    for k, m in enumerate(mhs):
        for o in lsh.query(m):
            if o != k:
                cands.add((min(k, o), max(k, o)))
    t2 = time.perf_counter()
    verified = {(i, j) for i, j in cands if mhs[i].jaccard(mhs[j]) >= threshold}
    t3 = time.perf_counter()
    return {"candidates": cands, "verified": verified, "seconds_signatures": t1 - t0,
            "seconds_lsh_verify": t3 - t1, "seconds": t3 - t0}


def score(found: set, truth: set, jacc: dict, threshold: float) -> dict:
    tp = len(found & truth)
    return {"pairs": len(found), "recall": tp / max(len(truth), 1),
            "precision": sum(jacc[p] >= threshold for p in found) / max(len(found), 1)}


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--docs", type=int, default=20_000)
    ap.add_argument("--planted", type=int, default=2_000)
    ap.add_argument("--max-edit", type=float, default=0.08)
    ap.add_argument("--ngram", type=int, default=5)
    ap.add_argument("--num-perm", type=int, default=128)
    ap.add_argument("--threshold", type=float, default=0.7)
    ap.add_argument("--lsh-margin", type=float, default=0.15)
    ap.add_argument("--family", default="multiply_shift", choices=minhash.MinHasher.FAMILIES)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--json", type=Path)
    args = ap.parse_args(argv)

    docs, planted = make_corpus(args.docs, args.planted, args.max_edit, args.seed)
    lengths = np.array([len(d) for d in docs])
    t0 = time.perf_counter()
    hashes, counts = minhash.shingle_hashes(np.concatenate(docs), lengths, args.ngram)
    t_shingle = time.perf_counter() - t0
    starts = np.r_[0, np.cumsum(counts)]
    keys32 = (hashes >> np.uint64(32)).tolist()
    shingle_lists = [keys32[starts[k]:starts[k + 1]] for k in range(len(docs))]
    sets = [set(s) for s in shingle_lists]
    bands, rows = minhash.lsh_params(args.threshold - args.lsh_margin, args.num_perm)

    a = ours(hashes, counts, args.num_perm, bands, rows, args.threshold, args.family)
    b = datasketch_run(shingle_lists, args.num_perm, bands, rows, args.threshold)
    pairs = set(map(tuple, np.sort(planted, axis=1).tolist())) | a["candidates"] | b["candidates"]
    pairs = sorted(pairs)
    jacc = dict(zip(pairs, exact_jaccard(sets, pairs)))
    truth = {p for p, j in jacc.items() if j >= args.threshold}
    result = {
        "command": " ".join([Path(sys.executable).name, *sys.argv]),
        "machine": {"python": platform.python_version(), "cpu": platform.processor() or platform.machine()},
        "params": {**{k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()},
                   "bands": bands, "rows": rows},
        "corpus": {"docs": len(docs), "tokens": int(lengths.sum()), "shingles": int(len(hashes)),
                   "true_pairs_at_threshold": len(truth), "shingle_seconds": round(t_shingle, 3)},
        "ours": {"seconds": round(a["seconds"], 3), "seconds_signatures": round(a["seconds_signatures"], 3),
                 "seconds_lsh_verify": round(a["seconds_lsh_verify"], 3),
                 "candidates": score(a["candidates"], truth, jacc, args.threshold),
                 "verified": score(a["verified"], truth, jacc, args.threshold)},
        "datasketch": {"seconds": round(b["seconds"], 3), "seconds_signatures": round(b["seconds_signatures"], 3),
                       "seconds_lsh_verify": round(b["seconds_lsh_verify"], 3),
                       "candidates": score(b["candidates"], truth, jacc, args.threshold),
                       "verified": score(b["verified"], truth, jacc, args.threshold)},
    }
    result["speedup"] = round(b["seconds"] / max(a["seconds"], 1e-9), 2)
    text = json.dumps(result, indent=1)
    print(text)
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(text + "\n")
    return result


if __name__ == "__main__":
    main()
