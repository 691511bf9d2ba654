"""Trainer configuration: typed dataclasses read from YAML, with `--set key=value` overrides.

A config has four sections (see `trainer/tiny.yaml`):

    model:  the transformer's shape (vocabulary size comes from the shards' vocab.json)
    data:   context length, batch, which split/tasks, loss on all tokens or target spans only
    optim:  AdamW, warmup + cosine schedule, gradient clipping
    run:    steps, eval/log/checkpoint intervals, device, dtype, seed, output folder

Unknown keys are errors (a typo must not silently fall back to a default).
"""
from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import yaml

from dataengine.config import build, override
from dataengine.errors import RecipeError


@dataclass
class ModelConfig:
    d_model: int = 128
    n_layers: int = 2
    n_heads: int = 4
    n_kv_heads: int | None = None     # < n_heads: grouped-query attention; None: n_heads (plain MHA)
    ffn_mult: float = 8 / 3           # SwiGLU hidden = round_up(ffn_mult * d_model, 32)
    rope_theta: float = 10000.0
    norm_eps: float = 1e-5
    tie_embeddings: bool = True
    dropout: float = 0.0
    vocab_size: int = 0               # 0: read from the shards' vocab.json


@dataclass
class DataConfig:
    context: int = 256                # tokens per packed row
    batch_size: int = 8               # rows per micro-batch (per rank)
    grad_accum: int = 1               # micro-batches per optimizer step
    split: str = "train"
    eval_split: str = "val"
    format: Literal["parquet", "webdataset"] = "parquet"  # which shards of the manifest to read
    tasks: list[str] | None = None    # keep only rows whose `task` is listed (None: all)
    mixture: Literal["manifest", "none"] = "manifest"  # follow manifest.json's mixture plan | every row once
    loss_on: Literal["all", "targets"] = "all"  # every token (pretraining) | target_spans only (SFT)
    attention: Literal["document", "causal"] = "document"  # block-diagonal causal per document | whole row
    workers: int = 1                  # loader slices per rank (DataLoader worker processes when > 1)
    seed: int = 0
    cache_shards: int = 64            # decoded shards kept in memory per worker


@dataclass
class OptimConfig:
    lr: float = 3e-3
    min_lr: float = 3e-4
    warmup_steps: int = 20
    weight_decay: float = 0.1
    beta1: float = 0.9
    beta2: float = 0.95
    eps: float = 1e-8
    grad_clip: float = 1.0


@dataclass
class RunConfig:
    out: str = "runs/tiny"
    steps: int = 200
    log_every: int = 10
    eval_every: int = 50
    eval_batches: int = 4
    checkpoint_every: int = 100
    keep_checkpoints: int = 2
    device: Literal["auto", "cpu", "cuda"] = "auto"
    dtype: Literal["float32", "bfloat16"] = "float32"  # bfloat16: autocast on CUDA
    compile: bool = False             # torch.compile the model
    deterministic: bool = True        # torch.use_deterministic_algorithms (exact resume on CPU)
    threads: int = 0                  # torch intra-op threads on CPU (0: leave torch's default)
    seed: int = 0
    init_from: str | None = None      # checkpoint folder (or run folder) to start from: weights only (SFT)
    stop_after: int | None = None     # stop (with a checkpoint) at this step; `--resume` continues
    peak_tflops: float | None = None  # for MFU; None: a table for known GPUs, a measured matmul on CPU


@dataclass
class TrainConfig:
    model: ModelConfig = field(default_factory=ModelConfig)
    data: DataConfig = field(default_factory=DataConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    run: RunConfig = field(default_factory=RunConfig)

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), sort_keys=True)


SECTIONS = {"model": ModelConfig, "data": DataConfig, "optim": OptimConfig, "run": RunConfig}


def from_dict(d: dict, where: str = "config") -> TrainConfig:
    if not isinstance(d, dict):
        raise RecipeError(f"{where}: a trainer config is a mapping with sections {sorted(SECTIONS)}")
    cfg = build(TrainConfig, d, where)  # every key typed and checked (dataengine.config)
    validate(cfg, where)
    return cfg


def apply_overrides(d: dict, overrides: list[str]) -> dict:
    """`section.key=value` pairs (value parsed as YAML) applied to a raw config dict."""
    d = json.loads(json.dumps(d))
    for item in overrides or []:
        if "=" not in item or "." not in item.split("=", 1)[0]:
            raise RecipeError(f"--set {item!r}: write it as section.key=value, e.g. --set run.steps=50")
        section = item.split("=", 1)[0].split(".", 1)[0]
        if section not in SECTIONS:
            raise RecipeError(f"--set {item!r}: unknown section {section!r}; sections are {sorted(SECTIONS)}")
        override(d, item)
    return d


def load_config(path: str | Path | None, overrides: list[str] | None = None) -> TrainConfig:
    raw: dict = {}
    if path is not None:
        path = Path(path)
        if not path.is_file():
            raise RecipeError(f"trainer config {path} not found; the shipped ones are trainer/tiny.yaml, "
                              "trainer/small-gpu.yaml and trainer/sft.yaml")
        raw = yaml.safe_load(path.read_text()) or {}
    return from_dict(apply_overrides(raw, overrides or []), str(path or "config"))


def validate(cfg: TrainConfig, where: str = "config") -> None:
    m, d, o, r = cfg.model, cfg.data, cfg.optim, cfg.run
    kv = m.n_kv_heads or m.n_heads
    checks = [
        (m.d_model % m.n_heads == 0, f"model.d_model ({m.d_model}) must be a multiple of model.n_heads ({m.n_heads})"),
        ((m.d_model // m.n_heads) % 2 == 0, "model.d_model / model.n_heads must be even for RoPE"),
        (m.n_heads % kv == 0, f"model.n_heads ({m.n_heads}) must be a multiple of model.n_kv_heads ({kv})"),
        (d.context >= 2, "data.context must be at least 2"),
        (d.batch_size >= 1 and d.grad_accum >= 1, "data.batch_size and data.grad_accum must be >= 1"),
        (d.format in ("parquet", "webdataset"), f"data.format must be parquet or webdataset, not {d.format!r}"),
        (d.mixture in ("manifest", "none"), (f"data.mixture must be manifest (follow the mixture plan in "
                                             f"manifest.json) or none (every row once), not {d.mixture!r}")),
        (d.loss_on in ("all", "targets"), f"data.loss_on must be all or targets, not {d.loss_on!r}"),
        (d.attention in ("document", "causal"), f"data.attention must be document or causal, not {d.attention!r}"),
        (d.workers >= 1, "data.workers must be >= 1"),
        (r.dtype in ("float32", "bfloat16"), f"run.dtype must be float32 or bfloat16, not {r.dtype!r}"),
        (r.device in ("auto", "cpu", "cuda"), f"run.device must be auto, cpu or cuda, not {r.device!r}"),
        (r.steps >= 1 and r.log_every >= 1 and r.eval_every >= 1 and r.checkpoint_every >= 1,
         "run.steps, run.log_every, run.eval_every and run.checkpoint_every must be >= 1"),
        (o.lr > 0 and 0 <= o.min_lr <= o.lr, "optim.lr must be > 0 and 0 <= optim.min_lr <= optim.lr"),
    ]
    for ok, message in checks:
        if not ok:
            raise RecipeError(f"{where}: {message}")
