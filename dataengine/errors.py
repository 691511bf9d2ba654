"""Errors that carry a fix.

`RejectError` marks bad *input*: the pipeline turns it into a row of
`rejects.parquet` (stage, reason, detail) and carries on. `RecipeError` marks a
bad *recipe* or invocation: it stops the run before any work, and its message
says how to fix it.
"""
from __future__ import annotations


class RejectError(Exception):
    """An input that cannot become a sample.

    `reason` is a short, stable snake_case code that is counted in stats
    (e.g. ``truncated``, ``invalid_utf8``, ``too_many_pixels``); `detail` is a
    free-form sentence for a person.
    """

    def __init__(self, reason: str, detail: str = ""):
        super().__init__(f"{reason}: {detail}" if detail else reason)
        self.reason = reason
        self.detail = detail


class RecipeError(ValueError):
    """A recipe, config or command line that cannot run; the message names the fix."""


class DiskFullError(RuntimeError):
    """The disk holding OUT (or a folder beside it) filled up; the message names the fix (`dataengine.diskspace`)."""
