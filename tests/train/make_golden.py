"""Regenerate the golden loss curve of the tiny config: `.venv/bin/python tests/train/make_golden.py`.

Trains `trainer/tiny.yaml` (its model, optimizer and data settings; only the
context, batch and run length shortened by GOLDEN_OVERRIDES) on the fixed
synthetic shards of `synth_shards.py`, and writes every logged loss to
`golden_tiny.json`. Regenerate it only when a change to the model, loader,
loss or optimizer is intended to change the numbers, and say so in the commit.
"""
from __future__ import annotations

import json
import sys
import tempfile
from pathlib import Path

import torch

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))

from dataengine.train.config import load_config  # noqa: E402
from dataengine.train.loop import train  # noqa: E402
from dataengine.train.metrics import read_metrics  # noqa: E402
from train.synth_shards import write_synthetic_shards  # noqa: E402

GOLDEN = HERE / "golden_tiny.json"
CONFIG = HERE.parents[1] / "trainer" / "tiny.yaml"
GOLDEN_OVERRIDES = ["run.steps=8", "run.log_every=1", "run.eval_every=4", "run.eval_batches=2", "run.threads=1",
                    "run.checkpoint_every=100", "data.context=64", "data.batch_size=4", "optim.warmup_steps=3"]


def golden_curve(workdir: Path) -> dict:
    shards = write_synthetic_shards(workdir / "shards")
    cfg = load_config(CONFIG, GOLDEN_OVERRIDES + [f"run.out={workdir / 'run'}"])
    train(cfg, shards, log=lambda *_: None)
    recs = read_metrics(workdir / "run" / "metrics.jsonl")
    return {
        "train_loss": [r["loss"] for r in recs if r["kind"] == "train"],
        "eval_loss": {str(r["step"]): r["loss"] for r in recs if r["kind"] == "eval"},
        "eval_loss_by_modality": {str(r["step"]): r["loss_by_modality"] for r in recs if r["kind"] == "eval"},
    }


def main() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        curve = golden_curve(Path(tmp))
    body = {"config": "trainer/tiny.yaml", "overrides": GOLDEN_OVERRIDES, "torch": torch.__version__,
            "tolerance": 1e-4, "regenerate": ".venv/bin/python tests/train/make_golden.py", **curve}
    GOLDEN.write_text(json.dumps(body, indent=1) + "\n")
    print(f"wrote {GOLDEN}: train loss {curve['train_loss'][0]:.4f} -> {curve['train_loss'][-1]:.4f}")


if __name__ == "__main__":
    main()
