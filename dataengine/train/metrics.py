"""Losses, per-modality accounting, throughput/MFU, `metrics.jsonl` and the loss-curve PNG.

The loss of a step is the mean over its target tokens (all ranks and
micro-batches together); a batch with no target token contributes zero loss
and zero gradient instead of NaN. Per-modality loss groups the predicted
tokens by the modality of their id (`Vocab.modality_index`).
"""
from __future__ import annotations

import json
import math
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from dataengine.vocab import MODALITIES

# dense bf16 peak TFLOP/s (no sparsity) of GPUs we may meet; MFU uses the first name found in the device name
GPU_PEAK_TFLOPS = {"H200": 989.0, "H100": 989.0, "A100": 312.0, "L40S": 362.0, "A10": 125.0, "L4": 121.0,
                   "4090": 165.0, "3090": 71.0, "V100": 125.0, "T4": 65.0}


def token_losses(logits_BTV: torch.Tensor, labels_BT: torch.Tensor) -> torch.Tensor:
    """Cross-entropy of every position, float32 [B, T]."""
    return F.cross_entropy(logits_BTV.float().flatten(0, 1), labels_BT.flatten(), reduction="none").view_as(labels_BT)


def masked_mean(loss_BT: torch.Tensor, mask_BT: torch.Tensor, denom: float | torch.Tensor | None = None) -> torch.Tensor:
    """sum(loss * mask) / max(denom, 1), denom defaulting to the number of targets: 0 (not NaN) when none."""
    total = (loss_BT * mask_BT).sum()
    count = mask_BT.sum() if denom is None else denom
    return total / torch.clamp(torch.as_tensor(count, dtype=total.dtype, device=total.device), min=1.0)


def modality_sums(loss_BT: torch.Tensor, mask_BT: torch.Tensor, mod_BT: torch.Tensor) -> torch.Tensor:
    """[len(MODALITIES), 2] float64: (summed loss, target count) per modality of the predicted token."""
    m = mask_BT.flatten().bool()
    idx = mod_BT.flatten()[m].long()
    out = torch.zeros(len(MODALITIES), 2, dtype=torch.float64, device=loss_BT.device)
    out[:, 0].index_add_(0, idx, loss_BT.detach().flatten()[m].double())
    out[:, 1].index_add_(0, idx, torch.ones_like(idx, dtype=torch.float64))
    return out


def modality_report(sums: torch.Tensor) -> dict[str, float]:
    s = sums.cpu().numpy()
    return {m: float(s[i, 0] / s[i, 1]) for i, m in enumerate(MODALITIES) if s[i, 1] > 0}


def measured_cpu_tflops(threads: int | None = None, n: int = 512, reps: int = 8) -> float:
    """Achieved fp32 matmul TFLOP/s on this CPU: the 'peak' for a CPU MFU (a best case, not a datasheet)."""
    a, b = torch.randn(n, n), torch.randn(n, n)
    a @ b
    best = math.inf
    for _ in range(reps):
        t0 = time.perf_counter()
        a @ b
        best = min(best, time.perf_counter() - t0)
    return 2 * n ** 3 / best / 1e12


def peak_tflops(device: torch.device, configured: float | None) -> tuple[float, str]:
    if configured:
        return float(configured), "config"
    if device.type == "cuda":
        name = torch.cuda.get_device_name(device)
        for key, value in GPU_PEAK_TFLOPS.items():
            if key in name:
                return value, f"table:{key}"
        return 312.0, "table:default"
    return measured_cpu_tflops(), "measured_cpu_matmul"


class MetricsLog:
    """Appends one JSON object per line to `metrics.jsonl`; a resumed run truncates records past its step."""

    def __init__(self, path: Path, resume_step: int | None = None, enabled: bool = True):
        self.path = Path(path)
        self.enabled = enabled
        if not enabled:
            return
        self.path.parent.mkdir(parents=True, exist_ok=True)
        if resume_step is None:
            self.path.write_text("")
        elif self.path.exists():  # drop what the interrupted run logged after its last checkpoint
            kept = [ln for ln in self.path.read_text().splitlines() if ln and json.loads(ln)["step"] <= resume_step]
            self.path.write_text("".join(ln + "\n" for ln in kept))

    def write(self, record: dict) -> None:
        if self.enabled:
            with open(self.path, "a") as f:
                f.write(json.dumps(record, sort_keys=True) + "\n")


def read_metrics(path: Path) -> list[dict]:
    return [json.loads(ln) for ln in Path(path).read_text().splitlines() if ln.strip()]


COLORS = {"train": (31, 119, 180), "eval": (0, 0, 0), "text": (214, 39, 40), "image": (44, 160, 44),
          "video": (148, 103, 189), "audio": (255, 127, 14), "sensor": (140, 86, 75), "special": (127, 127, 127)}


def write_summary(records: list[dict], run_dir: Path) -> None:
    """Deterministic files for DVC: `summary.json` (last train/eval losses) and `train_loss.csv`,
    `eval_loss.csv` (no timings, so an unchanged run rewrites the same bytes)."""
    train = [r for r in records if r.get("kind") == "train"]
    evals = [r for r in records if r.get("kind") == "eval"]
    summary = {"step": train[-1]["step"] if train else 0,
               "train_loss": train[-1]["loss"] if train else None,
               "eval_loss": evals[-1]["loss"] if evals else None,
               "eval_loss_by_modality": evals[-1].get("loss_by_modality", {}) if evals else {}}
    (run_dir / "summary.json").write_text(json.dumps(summary, indent=1, sort_keys=True) + "\n")
    rows = ["step,loss,lr,grad_norm"] + [f"{r['step']},{r['loss']!r},{r['lr']!r},{r['grad_norm']!r}" for r in train]
    (run_dir / "train_loss.csv").write_text("\n".join(rows) + "\n")
    rows = ["step,loss"] + [f"{r['step']},{r['loss']!r}" for r in evals]
    (run_dir / "eval_loss.csv").write_text("\n".join(rows) + "\n")


def plot_curves(records: list[dict], path: Path, title: str = "loss") -> Path:
    """Train loss, eval loss and eval loss per modality against step (matplotlib when installed, else PIL)."""
    series: dict[str, list[tuple[int, float]]] = {}
    for r in records:
        if r.get("kind") == "train":
            series.setdefault("train", []).append((r["step"], r["loss"]))
        elif r.get("kind") == "eval":
            series.setdefault("eval", []).append((r["step"], r["loss"]))
            for m, v in r.get("loss_by_modality", {}).items():
                series.setdefault(f"eval {m}", []).append((r["step"], v))
    series = {k: v for k, v in series.items() if v}
    path = Path(path)
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return _plot_pil(series, path, title)
    fig, ax = plt.subplots(figsize=(8, 5))
    for name, pts in series.items():
        ax.plot(*zip(*pts), label=name, lw=2 if name in ("train", "eval") else 1)
    ax.set(xlabel="step", ylabel="loss (nats/token)", title=title)
    ax.legend()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def _plot_pil(series: dict, path: Path, title: str, w: int = 800, h: int = 500) -> Path:
    from PIL import Image, ImageDraw

    img = Image.new("RGB", (w, h), "white")
    d = ImageDraw.Draw(img)
    left, right, top, bottom = 60, w - 150, 30, h - 40
    d.text((left, 8), title, fill="black")
    pts_all = [p for pts in series.values() for p in pts]
    if not pts_all:
        img.save(path)
        return path
    xs = np.array([p[0] for p in pts_all], float)
    ys = np.array([p[1] for p in pts_all], float)
    x0, x1 = xs.min(), max(xs.max(), xs.min() + 1)
    y0, y1 = ys.min(), max(ys.max(), ys.min() + 1e-6)

    def xy(x, y):
        return (left + (x - x0) / (x1 - x0) * (right - left), bottom - (y - y0) / (y1 - y0) * (bottom - top))

    d.rectangle([left, top, right, bottom], outline="black")
    for k in range(5):
        yv = y0 + (y1 - y0) * k / 4
        d.text((4, xy(x0, yv)[1] - 6), f"{yv:.2f}", fill="black")
        xv = x0 + (x1 - x0) * k / 4
        d.text((xy(xv, y0)[0] - 10, bottom + 6), f"{xv:.0f}", fill="black")
    d.text(((left + right) // 2 - 10, h - 16), "step", fill="black")
    for i, (name, pts) in enumerate(series.items()):
        color = COLORS.get(name.split()[-1], (0, 0, 0)) if name != "eval" else COLORS["eval"]
        line = [xy(x, y) for x, y in pts]
        if len(line) > 1:
            d.line(line, fill=color, width=2 if name in ("train", "eval") else 1)
        for px, py in line if name.startswith("eval") else []:
            d.ellipse([px - 2, py - 2, px + 2, py + 2], fill=color)
        d.line([right + 10, top + 10 + 16 * i, right + 30, top + 10 + 16 * i], fill=color, width=2)
        d.text((right + 35, top + 4 + 16 * i), name, fill="black")
    img.save(path)
    return path
