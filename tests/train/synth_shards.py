"""Synthetic, fixed shards for the trainer's tests and golden curve (no tokenizer, no Ray: milliseconds).

A small vocabulary with text, image, audio and sensor ranges; every document
is a learnable pattern (an arithmetic walk inside its modality's range)
wrapped in the real markers, written with the real shard writer. Chat rows
carry target spans on the assistant turn only, like `compose_chat`.
"""
from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import pyarrow as pa

from dataengine.shards.schema import SEQUENCE_SCHEMA
from dataengine.shards.writer import write_split
from dataengine.vocab import NUM_SPECIALS, Range, Vocab

SIZES = {"text": 96, "image": 64, "audio": 48, "sensor": 32}
FAMILY = {"text": "bpe", "image": "fsq_image", "audio": "mel_fsq", "sensor": "sensor_bins"}


def synthetic_vocab() -> Vocab:
    ranges, start = [], NUM_SPECIALS
    for name, size in SIZES.items():
        ranges.append(Range(name, name, FAMILY[name], 0, start, size))
        start += size
    info = {n: {"family": FAMILY[n], "modality": n, "vocab_size": s, "weights_sha256": None} for n, s in SIZES.items()}
    return Vocab(ranges, info)


def _walk(rng, vocab: Vocab, name: str, n: int) -> np.ndarray:
    lo, hi = vocab.tokenizer_range(name)
    step = int(rng.integers(1, 4))
    first = int(rng.integers(0, hi - lo))
    return (lo + (first + step * np.arange(n)) % (hi - lo)).astype(np.int32)


def _row(i: int, rng, vocab: Vocab) -> dict:
    sp = vocab.special
    kind = ("text", "image", "audio", "sensor", "chat")[i % 5]
    if kind == "chat":
        user, answer = _walk(rng, vocab, "text", int(rng.integers(4, 12))), _walk(rng, vocab, "text", 8)
        toks = np.concatenate([[sp("<|bos|>"), sp("<|user|>")], user, [sp("<|end_turn|>"), sp("<|assistant|>")],
                               answer, [sp("<|end_turn|>"), sp("<|eos|>")]]).astype(np.int32)
        a0 = 4 + len(user)
        spans = [{"modality": "text", "start": 2, "end": 2 + len(user)},
                 {"modality": "text", "start": a0, "end": a0 + len(answer)}]
        targets = [{"start": a0, "end": len(toks)}]
    else:
        body = _walk(rng, vocab, kind, int(rng.integers(10, 70)))
        begin, end = sp(f"<|{kind}_start|>"), sp(f"<|{kind}_end|>")
        caption = _walk(rng, vocab, "text", 6) if kind != "text" else np.zeros(0, np.int32)
        toks = np.concatenate([[sp("<|bos|>"), begin], body, [end], caption, [sp("<|eos|>")]]).astype(np.int32)
        spans = [{"modality": kind, "start": 2, "end": 2 + len(body)}]
        targets = [{"start": 0, "end": len(toks)}]
    return {"id": f"syn{i:05d}", "split": "train", "source": "synthetic", "task": kind, "modalities": [kind],
            "tokens": toks.tolist(), "num_tokens": len(toks), "spans": spans, "target_spans": targets,
            "side": "[]", "lineage": [], "meta": "{}"}


def write_synthetic_shards(out: Path, n_train: int = 120, n_val: int = 20, shard_rows: int = 32,
                           seed: int = 0, webdataset: bool = True) -> Path:
    """A `dataengine run`-shaped output folder (manifest.json, vocab.json, parquet/, wds/)."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    vocab = synthetic_vocab()
    vocab.save(out / "vocab.json")
    rng = np.random.default_rng(seed)
    rows = [_row(i, rng, vocab) for i in range(n_train + n_val)]
    shards = []
    for split, part in (("train", rows[:n_train]), ("val", rows[n_train:])):
        for r in part:
            r["split"] = split
        table = pa.Table.from_pylist(part, schema=SEQUENCE_SCHEMA)
        shards += write_split(table, split, out, shard_rows=shard_rows, compression="zstd", webdataset=webdataset)
    manifest = {"format": "dataengine.manifest/1", "vocab": {"path": "vocab.json", "sha256": vocab.sha256,
                                                             "size": vocab.size}, "shards": shards}
    (out / "manifest.json").write_text(json.dumps(manifest, indent=1, sort_keys=True) + "\n")
    return out


def tiny_overrides(run_dir, **extra) -> list[str]:
    """The tiny config made tiny enough for a test (a second or two per run)."""
    base = {"run.out": str(run_dir), "run.steps": 6, "run.log_every": 1, "run.eval_every": 3,
            "run.eval_batches": 2, "run.checkpoint_every": 3, "run.threads": 1, "data.context": 32,
            "data.batch_size": 4, "optim.warmup_steps": 2, "model.d_model": 32, "model.n_heads": 4,
            "model.n_kv_heads": 2}
    base.update(extra)
    return [f"{k}={v}" for k, v in base.items()]


# --- shards of a few source/kind groups with a mixture plan in the manifest (tests/train/test_mixture_plan.py) ---

MIXTURE_GROUPS = {  # group: (train rows, val rows, body length range): different sizes, so a policy re-weights
    "web/text": (600, 10, (20, 90)), "demo/image": (300, 10, (30, 70)),
    "demo/audio": (240, 10, (10, 40)), "lab/sensor": (200, 10, (10, 30)),
}


def _group_row(rid: str, split: str, group: str, lengths: tuple[int, int], rng, vocab: Vocab) -> dict:
    source, kind = group.rsplit("/", 1)
    sp = vocab.special
    body = _walk(rng, vocab, kind, int(rng.integers(*lengths)))
    toks = np.concatenate([[sp("<|bos|>"), sp(f"<|{kind}_start|>")], body, [sp(f"<|{kind}_end|>"), sp("<|eos|>")]])
    return {"id": rid, "split": split, "source": source, "task": kind, "kind": kind, "modalities": [kind],
            "tokens": toks.astype(np.int32).tolist(), "num_tokens": len(toks),
            "spans": [{"modality": kind, "start": 2, "end": 2 + len(body)}],
            "target_spans": [{"start": 0, "end": len(toks)}], "side": "[]", "lineage": [], "meta": "{}"}


def write_mixture_shards(out: Path, mixture, groups: dict | None = None, unplanned: tuple[str, ...] = (),
                         shard_rows: int = 128, seed: int = 0, webdataset: bool = True) -> Path:
    """A `dataengine run`-shaped folder whose rows (each written once) belong to `groups` and whose
    manifest carries the mixture plan of `mixture` (a `MixtureConfig`), computed like the pipeline does:
    `plan_from_histogram` over train tokens per (group, rank bin). Groups in `unplanned` are written
    but left out of the plan (their rows count once)."""
    from dataengine.curate.mixture import RANK_BITS, plan_from_histogram, rank_bins

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    vocab = synthetic_vocab()
    vocab.save(out / "vocab.json")
    rng = np.random.default_rng(seed)
    groups = dict(MIXTURE_GROUPS if groups is None else groups)
    rows = {"train": [], "val": []}
    for g, (n_train, n_val, lengths) in groups.items():
        for i in range(n_train + n_val):
            split = "train" if i < n_train else "val"
            rid = hashlib.sha256(f"{g}#{i}".encode()).hexdigest()[:16]
            rows[split].append(_group_row(rid, split, g, lengths, rng, vocab))
    shards = []
    for split in ("train", "val"):
        part = sorted(rows[split], key=lambda r: r["id"])  # the writer takes rows sorted by id
        table = pa.Table.from_pylist(part, schema=SEQUENCE_SCHEMA)
        shards += write_split(table, split, out, shard_rows=shard_rows, compression="zstd", webdataset=webdataset)
    names = sorted(g for g in groups if g not in unplanned)
    index = {g: i for i, g in enumerate(names)}
    planned = [r for r in rows["train"] if f"{r['source']}/{r['kind']}" in index]
    hist = np.zeros((len(names), 1 << RANK_BITS))
    np.add.at(hist, (np.array([index[f"{r['source']}/{r['kind']}"] for r in planned], dtype=np.int64),
                     rank_bins([r["id"] for r in planned], mixture.seed)),
              np.array([r["num_tokens"] for r in planned], dtype=np.float64))
    plan = plan_from_histogram(names, hist, mixture)
    manifest = {"format": "dataengine.manifest/1", "vocab": {"path": "vocab.json", "sha256": vocab.sha256,
                                                             "size": vocab.size}, "shards": shards,
                "mixture": {"format": "dataengine.mixture/1", "split": "train", "policy": plan["policy"],
                            "seed": plan["seed"], "rank_bits": RANK_BITS,
                            "groups": {g: {"full": plan["full"][i], "cut": plan["cut"][i],
                                           **plan["report"]["groups"][g]} for i, g in enumerate(names)}}}
    (out / "manifest.json").write_text(json.dumps(manifest, indent=1, sort_keys=True) + "\n")
    return out
