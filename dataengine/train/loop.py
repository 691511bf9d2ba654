"""The training loop: pretraining and instruction tuning, one process or DDP under `torchrun`.

One optimizer step = `grad_accum` micro-batches per rank. The step's loss is
the mean over every target token of the step on every rank: the target count is
summed (and all-reduced) before the backward passes, so each micro-batch
contributes sum(loss) / global count (times the world size, which DDP's
gradient averaging divides back out).

Exact resume: fp32, `torch.use_deterministic_algorithms(True)`, the loader's
per-worker state, the RNG state and the optimizer tensors are all in the
checkpoint, and every logged number of a step depends only on that state.
The progress bar (`dataengine.progress`: first rank only, off in CI) reads no
tensor and no random state: it shows the loss already logged, at log steps only.
"""
from __future__ import annotations

import json
import math
import os
import shutil
import time
from contextlib import nullcontext
from pathlib import Path

import torch
import torch.distributed as dist

from dataengine.errors import RecipeError
from dataengine.progress import bar_safe, progress
from dataengine.train import checkpoint as ck
from dataengine.train.config import TrainConfig
from dataengine.train.loader import PackedLoader, finite_batches
from dataengine.train.metrics import (MetricsLog, masked_mean, modality_report, modality_sums, peak_tflops,
                                      plot_curves, read_metrics, token_losses, write_summary)
from dataengine.train.model import Transformer
from dataengine.train.source import ShardSource
from dataengine.vocab import MODALITIES, Vocab


def lr_at(step: int, cfg) -> float:
    """Linear warmup to optim.lr over warmup_steps, then cosine down to optim.min_lr at run.steps (step >= 1)."""
    o, total = cfg.optim, cfg.run.steps
    if step <= o.warmup_steps:
        return o.lr * step / max(1, o.warmup_steps)
    frac = min(1.0, (step - o.warmup_steps) / max(1, total - o.warmup_steps))
    return o.min_lr + 0.5 * (o.lr - o.min_lr) * (1 + math.cos(math.pi * frac))


def make_optimizer(model: torch.nn.Module, cfg) -> torch.optim.AdamW:
    decay = [p for p in model.parameters() if p.dim() >= 2]      # matrices and embeddings
    no_decay = [p for p in model.parameters() if p.dim() < 2]    # norm gains
    o = cfg.optim
    return torch.optim.AdamW([{"params": decay, "weight_decay": o.weight_decay},
                              {"params": no_decay, "weight_decay": 0.0}],
                             lr=o.lr, betas=(o.beta1, o.beta2), eps=o.eps)


def _setup_distributed(cfg: TrainConfig) -> tuple[int, int, torch.device]:
    world = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    want_cuda = cfg.run.device == "cuda" or (cfg.run.device == "auto" and torch.cuda.is_available())
    if cfg.run.device == "cuda" and not torch.cuda.is_available():
        raise RecipeError("run.device is cuda but no GPU is visible; use --set run.device=cpu")
    if want_cuda:
        local = int(os.environ.get("LOCAL_RANK", "0"))
        torch.cuda.set_device(local)
        device = torch.device("cuda", local)
    else:
        device = torch.device("cpu")
    if world > 1 and not dist.is_initialized():
        dist.init_process_group(backend="nccl" if device.type == "cuda" else "gloo")
    return rank, world, device


def _all_reduce(t: torch.Tensor, world: int) -> torch.Tensor:
    if world > 1:
        dist.all_reduce(t)
    return t


def _barrier(world: int):
    return (lambda: dist.barrier()) if world > 1 else (lambda: None)


def evaluate(model, source: ShardSource, cfg: TrainConfig, device, vocab: Vocab, rank: int, world: int,
             autocast) -> dict:
    model.eval()
    sums = torch.zeros(len(MODALITIES), 2, dtype=torch.float64, device=device)
    with torch.no_grad():
        for b in finite_batches(source, context=cfg.data.context, batch_size=cfg.data.batch_size,
                                seed=cfg.data.seed, rank=rank, world=world, max_batches=cfg.run.eval_batches,
                                modality_of=vocab.modality_index):
            b = {k: v.to(device) for k, v in b.items()}
            with autocast:
                logits = model(b["inputs"], b["pos"], b["doc"] if cfg.data.attention == "document" else None)
            sums += modality_sums(token_losses(logits, b["labels"]), b["mask"], b["label_mod"])
    _all_reduce(sums, world)
    model.train()
    count = float(sums[:, 1].sum())
    return {"loss": float(sums[:, 0].sum()) / max(count, 1.0), "targets": int(count),
            "loss_by_modality": modality_report(sums)}


def train(cfg: TrainConfig, shards: Path, *, resume: bool = False, overwrite: bool = False, log=print) -> dict:
    """Train per `cfg` on the shards in `shards`; returns the last eval record (and `run_dir`).

    Process-wide torch settings changed for the run (deterministic algorithms, threads) are restored after.
    """
    saved = (torch.are_deterministic_algorithms_enabled(), torch.is_deterministic_algorithms_warn_only_enabled(),
             torch.get_num_threads())
    try:
        return _train(cfg, Path(shards), resume=resume, overwrite=overwrite, log=log)
    finally:
        torch.use_deterministic_algorithms(saved[0], warn_only=saved[1])
        torch.set_num_threads(saved[2])


def _train(cfg: TrainConfig, shards: Path, *, resume: bool, overwrite: bool, log) -> dict:
    rank, world, device = _setup_distributed(cfg)
    main = rank == 0
    say = bar_safe(log) if main else (lambda *a, **k: None)
    if cfg.run.deterministic:
        if device.type == "cuda":
            os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
        torch.use_deterministic_algorithms(True, warn_only=device.type == "cuda")
    if cfg.run.threads and device.type == "cpu":
        torch.set_num_threads(cfg.run.threads)
    run_dir = Path(cfg.run.out)
    has_ckpt = (run_dir / "checkpoints" / "latest").is_file()
    if resume and not has_ckpt:
        raise RecipeError(f"nothing to resume in {run_dir} (no checkpoints/latest); drop --resume to start")
    if has_ckpt and not resume:
        if not overwrite:
            raise RecipeError(f"{run_dir} already holds a run; pass --resume to continue it, --overwrite to "
                              "start over, or --set run.out=ANOTHER_FOLDER")
        if main:
            shutil.rmtree(run_dir / "checkpoints")
    _barrier(world)()

    vocab = Vocab.load(shards / "vocab.json")
    if cfg.model.vocab_size not in (0, vocab.size):
        raise RecipeError(f"model.vocab_size={cfg.model.vocab_size} but {shards}/vocab.json has {vocab.size} ids; "
                          "leave model.vocab_size at 0 to read it from the shards")
    cfg.model.vocab_size = vocab.size
    torch.manual_seed(cfg.run.seed)
    model = Transformer(cfg.model).to(device)
    if cfg.run.init_from and not resume:
        src = ck.resolve(Path(cfg.run.init_from))
        if ck.read_state(src).get("vocab_sha256") != vocab.sha256:
            raise RecipeError(f"{src} was trained on another vocabulary than {shards}/vocab.json; "
                              "fine-tune on shards written with the same tokenizers")
        ck.load_weights(src, model)
        say(f"initialised weights from {src}")
    optimizer = make_optimizer(model, cfg)

    d = cfg.data
    source = ShardSource(shards, d.split, d.format, d.tasks, d.loss_on, d.cache_shards, vocab.size, d.mixture)
    loader = PackedLoader(source, context=d.context, batch_size=d.batch_size, seed=d.seed, workers=d.workers,
                          rank=rank, world=world, modality_of=vocab.modality_index)
    try:
        eval_source = ShardSource(shards, d.eval_split, d.format, d.tasks, d.loss_on, d.cache_shards, vocab.size,
                                  d.mixture)
    except RecipeError as e:
        eval_source = None
        say(f"no evaluation: {e}")

    start = 0
    if resume:
        ckpt = ck.resolve(run_dir)
        state, mine = ck.load_checkpoint(ckpt, model=model, optimizer=optimizer, rank=rank, world=world)
        if state["config"]["model"] != cfg.to_dict()["model"]:
            raise RecipeError(f"{ckpt} holds a model of another shape; resume with the config it was trained with")
        loader.load_state_dict(mine["loader"])
        ck.set_rng_state(mine["rng"], device)
        start = int(state["step"])
        say(f"resumed from {ckpt} at step {start}")
    if main:
        run_dir.mkdir(parents=True, exist_ok=True)
        (run_dir / "config.json").write_text(json.dumps(cfg.to_dict(), indent=1, sort_keys=True) + "\n")
    metrics = MetricsLog(run_dir / "metrics.jsonl", resume_step=start if resume else None, enabled=main)

    raw_model = model
    if world > 1:
        model = torch.nn.parallel.DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda"
                                                          else None)
    fwd_model = torch.compile(model) if cfg.run.compile else model
    use_bf16 = cfg.run.dtype == "bfloat16"
    autocast = torch.autocast(device.type, dtype=torch.bfloat16) if use_bf16 else nullcontext()
    doc_mask = d.attention == "document"
    flops_tok = raw_model.flops_per_token(d.context)
    peak, peak_src = peak_tflops(device, cfg.run.peak_tflops)
    say(f"model: {raw_model.num_params(False) / 1e6:.2f}M parameters ({raw_model.num_params() / 1e6:.2f}M "
        f"non-embedding), vocab {vocab.size}; {len(source)} {d.split} sequences; {world} process(es) on {device}")

    def checkpoint(step: int) -> None:
        shared = {"config": cfg.to_dict(), "fingerprint": source.fingerprint(), "vocab_sha256": vocab.sha256,
                  "shards": str(shards.resolve())}
        mine = {"loader": loader.state_dict(), "rng": ck.rng_state(device)}
        path = ck.save_checkpoint(run_dir, step, model=raw_model, optimizer=optimizer, state=shared,
                                  rank_state=mine, rank=rank, world=world, keep=cfg.run.keep_checkpoints,
                                  barrier=_barrier(world))
        say(f"step {step}: checkpoint {path}")

    last_eval: dict = {}

    def run_eval(step: int) -> None:
        nonlocal last_eval
        if eval_source is None:
            return
        rec = evaluate(raw_model, eval_source, cfg, device, vocab, rank, world, autocast)
        last_eval = {"kind": "eval", "step": step, **rec}
        metrics.write(last_eval)
        mods = " ".join(f"{m}={v:.3f}" for m, v in rec["loss_by_modality"].items())
        say(f"step {step}: eval loss {rec['loss']:.4f} ({mods})")

    if start == 0:
        run_eval(0)
    model.train()
    t_last, tokens_since = time.perf_counter(), 0
    end = min(cfg.run.steps, cfg.run.stop_after or cfg.run.steps)
    bar = progress(end, "train", initial=start, unit="step", disable=not main)
    for step in range(start + 1, end + 1):
        lr = lr_at(step, cfg)
        for g in optimizer.param_groups:
            g["lr"] = lr
        micro = [{k: v.to(device, non_blocking=True) for k, v in next(loader).items()} for _ in range(d.grad_accum)]
        count = _all_reduce(sum(b["mask"].sum() for b in micro).double(), world)
        sums = torch.zeros(len(MODALITIES), 2, dtype=torch.float64, device=device)
        for i, b in enumerate(micro):
            sync = nullcontext() if (world == 1 or i == len(micro) - 1) else model.no_sync()
            with sync, autocast:
                logits = fwd_model(b["inputs"], b["pos"], b["doc"] if doc_mask else None)
                tl = token_losses(logits, b["labels"])
                loss = masked_mean(tl, b["mask"], count) * world
            loss.backward()
            sums += modality_sums(tl, b["mask"], b["label_mod"])
        grad_norm = torch.nn.utils.clip_grad_norm_(raw_model.parameters(), cfg.optim.grad_clip)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        tokens_since += sum(b["inputs"].numel() for b in micro) * world
        if step % cfg.run.log_every == 0 or step == end:
            _all_reduce(sums, world)
            if device.type == "cuda":
                torch.cuda.synchronize()
            now = time.perf_counter()
            tps = tokens_since / (now - t_last)
            rec = {"kind": "train", "step": step, "loss": float(sums[:, 0].sum() / sums[:, 1].sum().clamp(min=1)),
                   "loss_by_modality": modality_report(sums), "lr": lr, "grad_norm": float(grad_norm),
                   "targets": int(sums[:, 1].sum()), "tokens_per_s": round(tps, 1),
                   "mfu": round(flops_tok * tps / world / (peak * 1e12), 6), "peak_tflops": peak,
                   "peak_source": peak_src, "epoch": loader.states[0]["epoch"]}
            metrics.write(rec)
            say(f"step {step}/{cfg.run.steps}: loss {rec['loss']:.4f} lr {lr:.2e} {tps:,.0f} tok/s "
                f"mfu {rec['mfu']:.2%}")
            t_last, tokens_since = time.perf_counter(), 0
            bar.set_postfix_str(f"loss {rec['loss']:.4f}", refresh=False)
        bar.update(1)
        if step % cfg.run.eval_every == 0 or step == cfg.run.steps:
            run_eval(step)
        if step % cfg.run.checkpoint_every == 0 or step == end:
            checkpoint(step)
    bar.close()
    if main:
        records = read_metrics(run_dir / "metrics.jsonl")
        png = plot_curves(records, run_dir / "loss_curve.png", title=f"{run_dir.name}: loss per step")
        write_summary(records, run_dir)
        say(f"loss curve: {png}")
    if world > 1:
        dist.barrier()
    return {**last_eval, "run_dir": str(run_dir)}
