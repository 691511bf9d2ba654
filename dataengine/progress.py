"""Progress bars for long work (tokenizer fitting, training), quiet in CI and in logs.

One rule, shared by the tqdm bars here and the Ray Data bars of `dataengine run`
(`pipeline.run.init_ray`):

    DATAENGINE_PROGRESS=1   bars on, whatever else holds
    DATAENGINE_PROGRESS=0   bars off
    otherwise               off when CI is set (CI=true, as CI services do) or stderr is not a terminal

Bars write to stderr only and never touch a random generator, so they change no
logged number and no result. Log lines printed while a bar is live go through
`bar_safe(log)`, which lifts the bars out of the way and draws them again below.
"""
from __future__ import annotations

import os
import sys
from typing import Any, Callable, Iterable, TextIO

from tqdm import tqdm

ENV = "DATAENGINE_PROGRESS"
_ON = {"1", "true", "yes", "on"}
_OFF = {"0", "false", "no", "off"}


def progress_enabled(stream: TextIO | None = None) -> bool:
    """Whether bars should draw on `stream` (default stderr): see the module docstring for the rule."""
    setting = os.environ.get(ENV, "").strip().lower()
    if setting in _ON:
        return True
    if setting in _OFF:
        return False
    if os.environ.get("CI", "").strip().lower() not in ("", "0", "false", "no"):
        return False
    stream = sys.stderr if stream is None else stream
    try:
        return bool(stream.isatty())
    except (AttributeError, ValueError):  # no isatty, or a closed stream
        return False


def progress(iterable_or_total: Iterable | int | None, desc: str, *, total: int | None = None, unit: str = "it",
             leave: bool = False, disable: bool = False, file: TextIO | None = None, **kwargs: Any) -> tqdm:
    """A tqdm bar over an iterable, or a manual one (`.update(n)`) when given an int total.

    Off by `progress_enabled` or `disable=True` (e.g. every DDP rank but the first): then it
    draws nothing at all. `leave=False` (default) erases the bar when it closes, so finished
    work leaves only its log lines behind.
    """
    iterable = None
    if isinstance(iterable_or_total, int) and not isinstance(iterable_or_total, bool):
        total = iterable_or_total
    else:
        iterable = iterable_or_total
    file = sys.stderr if file is None else file
    return tqdm(iterable, desc=desc, total=total, unit=unit, leave=leave, file=file, dynamic_ncols=True,
                disable=disable or not progress_enabled(file), **kwargs)


def bar_safe(log: Callable[..., Any]) -> Callable[..., Any]:
    """`log` made to print above the live bars (cleared first, redrawn after) instead of through them."""
    def wrapped(*args: Any, **kwargs: Any) -> Any:
        if not getattr(tqdm, "_instances", None):  # no live bar: log as is
            return log(*args, **kwargs)
        with tqdm.external_write_mode():
            return log(*args, **kwargs)
    return wrapped
