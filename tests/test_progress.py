"""Progress bars: on at a terminal, off in CI or when redirected, DATAENGINE_PROGRESS wins; never change a result."""
import io
import re

import pytest
import torch
import torch.nn.functional as F

from dataengine.progress import ENV, bar_safe, progress, progress_enabled
from dataengine.tokenize.base import seeded
from dataengine.tokenize.training import train


class Tty(io.StringIO):
    def isatty(self) -> bool:
        return True


@pytest.fixture
def env(monkeypatch):
    monkeypatch.delenv("CI", raising=False)
    monkeypatch.delenv(ENV, raising=False)
    return monkeypatch


def test_on_at_a_terminal_off_when_redirected(env):
    assert progress_enabled(Tty())
    assert not progress_enabled(io.StringIO())


@pytest.mark.parametrize("ci", ["true", "1", "yes"])
def test_ci_turns_bars_off(env, ci):
    env.setenv("CI", ci)
    assert not progress_enabled(Tty())


def test_ci_false_does_not(env):
    env.setenv("CI", "false")
    assert progress_enabled(Tty())


def test_dataengine_progress_forces_on_or_off(env):
    env.setenv("CI", "true")
    env.setenv(ENV, "1")
    assert progress_enabled(io.StringIO())  # forced on: in CI and not a terminal
    env.delenv("CI")
    env.setenv(ENV, "0")
    assert not progress_enabled(Tty())


def test_a_disabled_bar_writes_nothing(env, capsys):
    env.setenv("CI", "true")
    bar = progress(range(50), "quiet")
    assert list(bar) == list(range(50))
    manual = progress(10, "quiet too")
    manual.update(10)
    manual.set_postfix_str("loss 1.0")
    manual.close()
    captured = capsys.readouterr()
    assert captured.err == "" and captured.out == ""


def test_a_forced_bar_draws_on_stderr(env, capsys):
    env.setenv(ENV, "1")
    for _ in progress(range(3), "drawn", leave=True):
        pass
    assert "drawn" in capsys.readouterr().err


def test_disable_wins_over_forced_on(env, capsys):
    env.setenv(ENV, "1")
    bar = progress(5, "rank 1", disable=True)
    bar.update(5)
    bar.close()
    assert capsys.readouterr().err == ""


def test_bar_safe_logs_through_a_live_bar(env):
    env.setenv(ENV, "1")
    lines = []
    bar = progress(5, "live", file=io.StringIO())
    assert bar_safe(lambda m: lines.append(m) or "kept")("hello") == "kept"
    bar.close()
    assert lines == ["hello"]


def _fit(log):
    g = torch.Generator().manual_seed(0)
    w = torch.randn(4, 1, generator=g)
    x = torch.randn(128, 4, generator=g)
    y = x @ w

    def draw(gen):
        i = torch.randint(0, 100, (16,), generator=gen)
        return x[i], y[i]

    with seeded(0):
        model = torch.nn.Linear(4, 1)
        res = train(model, draw, lambda m, b: F.mse_loss(m(b[0]), b[1]), [(x[100:], y[100:])], steps=40, lr=0.05,
                    generator=torch.Generator().manual_seed(0), eval_every=10, log=log)
    return res


def test_bars_change_no_number_of_a_fit(env, capsys):
    """The same fit with bars forced on and off: identical weights, facts and logged losses."""
    logs = {}
    for setting in ("1", "0"):
        env.setenv(ENV, setting)
        lines = []
        res = _fit(lines.append)
        logs[setting] = (res, [re.sub(r" \d+s [\d.]+ it/s$", "", l) for l in lines])  # timings aside
    (on, log_on), (off, log_off) = logs["1"], logs["0"]
    assert on.card_facts() == off.card_facts()
    assert all(torch.equal(on.state[k], off.state[k]) for k in off.state)
    assert log_on == log_off and len(log_on) == 10  # step, train and val losses (timings aside)
    assert "fit train" in capsys.readouterr().err  # the forced run did draw its bar


def test_init_ray_follows_the_same_rule(env):
    """Ray Data's bars (decode, tokenize) obey the same rule; Ray itself is not started (`init_ray` reuses one)."""
    import ray
    import ray.data

    from dataengine.pipeline.ray_session import init_ray

    env.setattr(ray, "is_initialized", lambda: True)
    ctx = ray.data.DataContext.get_current()
    before = ctx.enable_progress_bars
    try:
        env.setenv(ENV, "1")
        init_ray()
        assert ctx.enable_progress_bars
        env.setenv(ENV, "0")
        init_ray()
        assert not ctx.enable_progress_bars
    finally:
        ctx.enable_progress_bars = before
