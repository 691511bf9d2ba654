"""The training loop shared by the trainable tokenizer families.

    for step in range(steps):
        lr <- cosine_lr(step)            (warmup, then cosine decay to 10%)
        batch <- draw_batch(g)            (g: the caller's seeded torch.Generator)
        AdamW step on loss_fn(model, batch), gradients clipped to norm 1
        every `eval_every` steps: validation loss on a fixed held-out set;
            best weights kept; stop when it has not improved by a relative
            `min_delta` (1%) for `patience` evaluations in a row

It logs one line per ~10% of the steps (train loss, last validation loss,
elapsed seconds, steps/s), shows a progress bar on a terminal (`dataengine.progress`:
off in CI, never a different number), and returns the best weights with a few facts about
the run. It does not seed anything itself: call it inside ``base.seeded(seed)``
(one CPU thread, deterministic kernels) so that the same seed and samples give
bitwise-identical weights.
"""
from __future__ import annotations

import copy
import math
import time
from dataclasses import dataclass
from typing import Any, Callable, Iterable

import torch

from dataengine.progress import bar_safe, progress
from dataengine.tokenize.base import cosine_lr

MIN_DELTA = 0.01  # an evaluation "improves" when val < reference * (1 - MIN_DELTA)


def n_validation(n_items: int, fraction: float = 0.1, cap: int = 64) -> int:
    """How many of ``n_items`` to hold out for validation: ~10%, at least 1, at most ``cap``.

    0 when there are fewer than 2 items (nothing would be left to train on).
    """
    if n_items < 2:
        return 0
    return int(min(cap, n_items - 1, max(1, round(fraction * n_items))))


@dataclass
class TrainResult:
    state: dict[str, torch.Tensor]  # best weights (a copy of the state dict)
    facts: dict[str, Any]  # steps_run, best_step, best_val_loss, stopped_early, seconds, ...

    def card_facts(self) -> dict[str, Any]:
        """The facts that are a pure function of seed + samples (no wall-clock time), for a card."""
        return {k: v for k, v in self.facts.items() if k != "seconds"}


@torch.inference_mode()
def validation_loss(model: torch.nn.Module, loss_fn: Callable, val_batches: Iterable) -> float:
    """Mean of ``loss_fn(model, batch)`` over the validation batches, in eval mode."""
    was_training = model.training
    model.eval()
    losses = [float(loss_fn(model, b)) for b in val_batches]
    model.train(was_training)
    return sum(losses) / max(1, len(losses))


def train(
    model: torch.nn.Module,
    draw_batch: Callable[[torch.Generator], Any],
    loss_fn: Callable[[torch.nn.Module, Any], torch.Tensor],
    val_batches: list,
    *,
    steps: int,
    lr: float,
    generator: torch.Generator,
    patience: int = 3,
    eval_every: int = 50,
    log: Callable[[str], Any] = print,
    tag: str = "train",
    weight_decay: float = 1e-4,
    min_delta: float = MIN_DELTA,
) -> TrainResult:
    """Train ``model`` in place; return the best weights (by validation loss) and run facts.

    ``val_batches``: a list of batches for ``loss_fn`` (held out, never trained on);
    when empty, the training loss of each step stands in (logged as such).
    ``patience <= 0`` disables early stopping. The model is left in train mode
    with its LAST weights; load ``result.state`` to get the best ones.
    """
    if steps < 1:
        raise ValueError(f"{tag}: steps must be >= 1, got {steps}")
    t0 = time.time()
    model.train()
    opt = torch.optim.AdamW(model.parameters(), lr=lr, betas=(0.9, 0.99), weight_decay=weight_decay)
    log_every = max(1, math.ceil(steps / 10))
    eval_every = max(1, int(eval_every))
    best_val, best_step, best_state = math.inf, 0, copy.deepcopy(model.state_dict())
    reference, bad_evals, last_val, stopped_early = math.inf, 0, math.nan, False
    step = 0
    bar = progress(steps, f"fit {tag}", unit="step")
    log = bar_safe(log)
    for step in range(1, steps + 1):
        for group in opt.param_groups:
            group["lr"] = cosine_lr(step - 1, steps, lr)
        loss = loss_fn(model, draw_batch(generator))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        bar.update(1)

        last = step == steps
        if step % eval_every == 0 or last:
            last_val = validation_loss(model, loss_fn, val_batches) if val_batches else loss.item()
            if last_val < best_val:
                best_val, best_step, best_state = last_val, step, copy.deepcopy(model.state_dict())
            if last_val < reference * (1 - min_delta):
                reference, bad_evals = last_val, 0
            else:
                bad_evals += 1
            stopped_early = patience > 0 and bad_evals >= patience and not last
        if step % log_every == 0 or last or stopped_early:
            secs = time.time() - t0
            val = "-" if math.isnan(last_val) else f"{last_val:.4f} (best {best_val:.4f})"
            log(f"[{tag}] step {step}/{steps} train {loss.item():.4f} val {val} "
                f"{secs:.0f}s {step / max(secs, 1e-9):.1f} it/s")
        if stopped_early:
            log(f"[{tag}] stopped early at step {step}/{steps}: val loss did not improve by "
                f"{min_delta:.0%} in {patience} evaluations; best {best_val:.4f} at step {best_step}")
            break
    bar.close()
    facts = {
        "steps_run": step,
        "best_step": best_step,
        "best_val_loss": round(best_val, 6),
        "stopped_early": stopped_early,
        "n_val_batches": len(val_batches),
        "seconds": round(time.time() - t0, 1),
    }
    return TrainResult(best_state, facts)
