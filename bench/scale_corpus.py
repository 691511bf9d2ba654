"""Generated English text corpora for `scale_out.py`: a seeded word Markov chain over Python's own docs.

    .venv/bin/python bench/scale_corpus.py /tmp/corpus --docs 2000      # by hand (scale_out.py caches them)

The chain (order 1 or 2, words split on whitespace) is trained on
`pydoc_data.topics` (~465 KB of English prose that ships with Python). Document
`i` is a function of (seed, i) alone: a start state and a length of 2,000 to
4,000 characters drawn from a generator seeded with (seed, i), so the first N
documents are the same in every corpus and a corpus of N documents is the first
N of the pool. Walking the chain is vectorised over 1,000 documents at a time
(one NumPy step per word), and folders of 1,000 documents are written by a
process pool. A document is `dNNNN/docNNNNNNNN.txt` (a text document: no media
sibling), with a paragraph break every 60 to 120 words.
"""
from __future__ import annotations

import argparse
import os
import shutil
import sys
from functools import lru_cache
from multiprocessing import Pool
from pathlib import Path

import numpy as np

PER_FOLDER = 1000
DONE = ".complete"
MIN_CHARS, MAX_CHARS = 2000, 4000


@lru_cache(maxsize=4)
def chain(order: int) -> dict:
    """The chain as flat arrays: for state s, its successors are succ_word[start[s]:start[s] + count[s]]
    (with repetition: the empirical distribution) and succ_state the state each one leads to."""
    from pydoc_data.topics import topics

    words = " ".join(topics[k] for k in sorted(topics)).split()
    vocab, ids = np.unique(np.array(words, dtype=object), return_inverse=True)
    ids = np.concatenate([ids, ids[:order]])  # circular: every state has a successor
    n = len(words)
    if order == 1:
        state_of = ids[:n]                       # state at position p = word p
    else:
        pairs = ids[:n + 1].astype(np.int64) * len(vocab) + ids[1:n + 2]
        _, state_of = np.unique(pairs[:n], return_inverse=True)
        state_of = np.concatenate([state_of, state_of[:1]])
    states = int(state_of[:n].max()) + 1
    order_idx = np.argsort(state_of[:n], kind="stable")  # positions grouped by their state
    count = np.bincount(state_of[:n], minlength=states)
    start = np.concatenate([[0], np.cumsum(count)[:-1]])
    nxt = order_idx + order                          # the word after the state's last word
    succ_word = ids[nxt % (n + order)]
    succ_state = state_of[(order_idx + 1) % n]
    return {"vocab": vocab, "start": start, "count": count, "succ_word": succ_word, "succ_state": succ_state,
            "states": states, "words": n}


def folder_docs(folder: int, seed: int, order: int, n_docs: int) -> list[str]:
    """The documents of folder `folder` (documents folder*1000 ... , at most n_docs of them)."""
    c = chain(order)
    first = folder * PER_FOLDER
    k = min(PER_FOLDER, n_docs - first)
    rngs = [np.random.default_rng([seed, first + j]) for j in range(k)]
    state = np.array([r.integers(c["states"]) for r in rngs], dtype=np.int64)
    target = np.array([r.integers(MIN_CHARS, MAX_CHARS + 1) for r in rngs])
    steps = MAX_CHARS // 3  # words are >= 1 char + a space: enough words for the longest document
    u = np.stack([r.random(steps) for r in rngs], axis=1)  # [steps, k]: each document's own stream
    out = np.empty((steps, k), dtype=np.int64)
    for t in range(steps):
        j = c["start"][state] + (u[t] * c["count"][state]).astype(np.int64)
        out[t] = c["succ_word"][j]
        state = c["succ_state"][j]
    vocab = c["vocab"]
    docs = []
    for j in range(k):
        words, size, since = [], 0, 0
        gap = rngs[j].integers(60, 121)
        for w in vocab[out[:, j]]:
            words.append(w)
            size += len(w) + 1
            if size >= target[j]:
                break
            since += 1
            if since == gap:  # a paragraph break every 60 to 120 words
                words.append("\n\n")
                since, gap = 0, rngs[j].integers(60, 121)
        docs.append(" ".join(words).replace(" \n\n ", "\n\n") + "\n")
    return docs


def _write_folder(job) -> int:
    root, folder, seed, order, n_docs = job
    d = Path(root) / f"d{folder:04d}"
    d.mkdir(parents=True, exist_ok=True)
    total = 0
    for j, text in enumerate(folder_docs(folder, seed, order, n_docs)):
        data = text.encode()
        (d / f"doc{folder * PER_FOLDER + j:08d}.txt").write_bytes(data)
        total += len(data)
    return total


def pool_of(work: Path, seed: int, order: int) -> Path:
    return Path(work) / f"textpool-s{seed}-o{order}"


def ensure_pool(work: Path, n_docs: int, *, seed: int = 0, order: int = 2, procs: int | None = None,
                log=print) -> Path:
    """The pool holds at least `n_docs` documents (full folders; folders already written are kept)."""
    root = pool_of(work, seed, order)
    root.mkdir(parents=True, exist_ok=True)
    folders = -(-n_docs // PER_FOLDER)
    todo = [f for f in range(folders) if not (root / f"d{f:04d}" / DONE).is_file()]
    if todo:
        log(f"writing {len(todo)} folders of {PER_FOLDER} generated documents into {root}")
        with Pool(procs or os.cpu_count()) as pool:
            for f, _ in zip(todo, pool.imap(_write_folder, [(str(root), f, seed, order, (f + 1) * PER_FOLDER)
                                                            for f in todo])):
                (root / f"d{f:04d}" / DONE).write_text("")
    return root


def corpus(work: Path, n_docs: int, *, seed: int = 0, order: int = 2, log=print) -> Path:
    """`work/textcorpus-s{seed}-o{order}-{n_docs}`: the first `n_docs` documents of the pool, as hard links
    (same relative paths, so the same unit ids in every size)."""
    path = Path(work) / f"textcorpus-s{seed}-o{order}-{n_docs}"
    done = path.with_name(path.name + DONE)  # beside it: a dot file inside would be a discovery reject
    if done.is_file() and path.is_dir():
        return path
    pool = ensure_pool(work, n_docs, seed=seed, order=order, log=log)
    shutil.rmtree(path, ignore_errors=True)
    for i in range(n_docs):
        f = i // PER_FOLDER
        if i % PER_FOLDER == 0:
            (path / f"d{f:04d}").mkdir(parents=True)
        name = f"d{f:04d}/doc{i:08d}.txt"
        try:
            os.link(pool / name, path / name)
        except OSError:
            shutil.copy2(pool / name, path / name)
    done.write_text("")
    return path


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("out", help="work folder (pool and corpus are made under it)")
    ap.add_argument("--docs", type=int, required=True)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--order", type=int, default=2, choices=[1, 2])
    args = ap.parse_args(argv)
    print(corpus(Path(args.out), args.docs, seed=args.seed, order=args.order))
    return 0


if __name__ == "__main__":
    sys.exit(main())
