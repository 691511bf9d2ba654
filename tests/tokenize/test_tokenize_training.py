"""The shared training loop: early stop, best weights, quiet progress, determinism."""
from __future__ import annotations

import torch
import torch.nn.functional as F

from dataengine.tokenize.base import seeded
from dataengine.tokenize.training import n_validation, train, validation_loss

QUIET = lambda *_: None  # noqa: E731


def regression(seed: int = 0):
    """y = x @ w + noise; a linear model converges (and then plateaus) in a few hundred steps."""
    g = torch.Generator().manual_seed(seed)
    w = torch.randn(4, 1, generator=g)
    x = torch.randn(256, 4, generator=g)
    y = x @ w + 0.1 * torch.randn(256, 1, generator=g)
    train_xy, val_xy = (x[:200], y[:200]), (x[200:], y[200:])

    def draw(gen: torch.Generator):
        i = torch.randint(0, 200, (16,), generator=gen)
        return train_xy[0][i], train_xy[1][i]

    def loss_fn(model, batch):
        return F.mse_loss(model(batch[0]), batch[1])

    return draw, loss_fn, [val_xy]


def run(steps=2000, **kw):
    draw, loss_fn, val = regression()
    with seeded(0):
        model = torch.nn.Linear(4, 1)
        res = train(model, draw, loss_fn, val, steps=steps, lr=0.05,
                    generator=torch.Generator().manual_seed(0), **{"log": QUIET, **kw})
    return model, loss_fn, val, res


def test_stops_early_when_validation_plateaus_and_keeps_best():
    model, loss_fn, val, res = run(eval_every=10, patience=3)
    f = res.facts
    assert f["stopped_early"] and f["steps_run"] < 2000 and f["steps_run"] % 10 == 0
    assert f["best_step"] <= f["steps_run"] and f["best_val_loss"] < 0.05
    model.load_state_dict(res.state)
    assert abs(validation_loss(model, loss_fn, val) - f["best_val_loss"]) < 1e-5
    assert set(res.card_facts()) == set(f) - {"seconds"}


def test_patience_zero_runs_every_step():
    _, _, _, res = run(steps=120, eval_every=10, patience=0)
    assert not res.facts["stopped_early"] and res.facts["steps_run"] == 120


def test_progress_is_about_ten_lines_and_names_the_stop():
    lines: list[str] = []
    run(steps=200, eval_every=50, patience=0, log=lines.append, tag="t")
    assert 10 <= len(lines) <= 11 and lines[-1].startswith("[t] step 200/200")
    assert "it/s" in lines[-1] and "val" in lines[-1]
    lines.clear()
    run(eval_every=10, patience=2, log=lines.append, tag="t")
    assert "stopped early" in lines[-1]


def test_same_seed_same_weights():
    a, b = run(steps=50)[3].state, run(steps=50)[3].state
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_validation_size():
    assert [n_validation(n) for n in (0, 1, 2, 4, 10, 106, 5000)] == [0, 0, 1, 1, 1, 11, 64]
