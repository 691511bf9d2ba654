"""Training tokens/s vs loader tokens/s for a trainer config (default: trainer/tiny.yaml).

    .venv/bin/python bench/train_throughput.py --shards out/demo --json bench/results/train_throughput_cpu.json

Training: `dataengine.train.loop.train` for `--steps` steps (no eval, no
checkpoint until the end); the number is the median of the per-step tokens/s
logged after `--warmup` steps. Loader: a fresh `PackedLoader` with the same
data settings (context, batch, workers, task filter, loss masks) from a cold
start (shards read and decoded inside the timing), for `--loader-batches`
batches. The loader must deliver at least 10x what training consumes.
Without `--shards` it uses the fixed synthetic shards of the tests (say so in
the JSON, the vocabulary is then tiny and training faster than on real shards).
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]


def loader_tokens_per_s(cfg, shards: Path, batches: int) -> dict:
    from dataengine.train.loader import PackedLoader
    from dataengine.train.source import ShardSource
    from dataengine.vocab import Vocab

    d = cfg.data
    vocab = Vocab.load(shards / "vocab.json")
    t0 = time.perf_counter()
    src = ShardSource(shards, d.split, d.format, d.tasks, d.loss_on, d.cache_shards, vocab.size)
    loader = PackedLoader(src, context=d.context, batch_size=d.batch_size, seed=d.seed, workers=d.workers,
                          modality_of=vocab.modality_index)
    tokens = 0
    for _ in range(batches):
        tokens += next(loader)["inputs"].numel()
    dt = time.perf_counter() - t0
    return {"tokens_per_s": round(tokens / dt, 1), "batches": batches, "tokens": tokens, "seconds": round(dt, 3),
            "epochs_touched": max(s["epoch"] for s in loader.states) + 1}


def train_tokens_per_s(cfg, shards: Path, steps: int, warmup: int) -> dict:
    from dataengine.train.loop import train
    from dataengine.train.metrics import read_metrics

    with tempfile.TemporaryDirectory() as tmp:
        cfg.run.out, cfg.run.steps, cfg.run.log_every = tmp, steps, 1
        cfg.run.eval_every = cfg.run.checkpoint_every = steps
        cfg.run.eval_batches = 1
        t0 = time.perf_counter()
        train(cfg, shards, log=lambda *_: None)
        wall = time.perf_counter() - t0
        recs = [r for r in read_metrics(Path(tmp) / "metrics.jsonl") if r["kind"] == "train"]
    steady = [r for r in recs if r["step"] > warmup]
    return {"tokens_per_s": statistics.median(r["tokens_per_s"] for r in steady),
            "mfu": statistics.median(r["mfu"] for r in steady), "peak_tflops": steady[-1]["peak_tflops"],
            "peak_source": steady[-1]["peak_source"], "steps": steps, "warmup": warmup,
            "wall_seconds_incl_startup": round(wall, 2), "first_loss": recs[0]["loss"], "last_loss": recs[-1]["loss"]}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--config", default=str(ROOT / "trainer" / "tiny.yaml"))
    p.add_argument("--shards", help="output folder of `dataengine run` (default: synthetic test shards)")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE")
    p.add_argument("--steps", type=int, default=30)
    p.add_argument("--warmup", type=int, default=5)
    p.add_argument("--loader-batches", type=int, default=300)
    p.add_argument("--json", help="write the results here")
    args = p.parse_args(argv)

    from dataengine.train.config import load_config

    tmp = None
    if args.shards:
        shards, kind = Path(args.shards), "dataengine run output"
    else:
        sys.path.insert(0, str(ROOT / "tests"))
        from train.synth_shards import write_synthetic_shards
        tmp = tempfile.TemporaryDirectory()
        shards, kind = write_synthetic_shards(Path(tmp.name) / "shards", n_train=2000, n_val=50), "synthetic"
    loader = loader_tokens_per_s(load_config(args.config, args.set), shards, args.loader_batches)
    training = train_tokens_per_s(load_config(args.config, args.set), shards, args.steps, args.warmup)
    ratio = loader["tokens_per_s"] / training["tokens_per_s"]
    manifest = json.loads((shards / "manifest.json").read_text())
    result = {
        "command": "python " + " ".join([os.path.relpath(__file__, ROOT)] + (argv or sys.argv[1:])),
        "machine": {"python": platform.python_version(), "cpu": platform.processor() or platform.machine(),
                    "cpus": os.cpu_count(), "torch": torch.__version__, "torch_threads": torch.get_num_threads(),
                    "cuda": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None},
        "config": os.path.relpath(args.config, ROOT), "overrides": args.set,
        "shards": {"kind": kind, "vocab_size": manifest["vocab"]["size"],
                   "sequences": sum(s["sequences"] for s in manifest["shards"] if s["format"] == "parquet")},
        "training": training, "loader": loader, "loader_over_training": round(ratio, 1),
        "loader_at_least_10x": ratio >= 10,
    }
    text = json.dumps(result, indent=1)
    print(text)
    if args.json:
        Path(args.json).write_text(text + "\n")
    if tmp:
        tmp.cleanup()
    return 0 if ratio >= 10 else 1


if __name__ == "__main__":
    sys.exit(main())
