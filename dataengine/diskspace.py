"""A full disk is an error that says which disk and how much, never a traceback or a half-written OUT.

`run` writes into folders beside OUT (staging, work, listing, shuffle) and swaps the staging
folder into place at the end, so OUT is whole or absent whatever fails. When a write anywhere,
on the driver or in a Ray worker, fails with ENOSPC or EDQUOT, `disk_full` turns the exception
(however Ray wrapped it) into a `DiskFullError` naming the disk, its free space, what the run had
written so far and an estimate of what it needs. The next run clears the partial folders first and
reuses the work folder's committed parts: the same command, with room again, writes exactly the
shards of an uninterrupted run.
"""
from __future__ import annotations

import errno
import os
import shutil
from pathlib import Path

from dataengine.errors import DiskFullError

_CODES = (errno.ENOSPC, errno.EDQUOT)
_TEXTS = ("no space left on device", "disk quota exceeded", "[errno 28]", "[errno 122]")


def is_disk_full(exc: BaseException) -> bool:
    """True when `exc`, or anything it wraps (causes, contexts, Ray task errors,
    `shutil.Error` lists), is a write that failed for lack of space."""
    seen: set[int] = set()
    stack = [exc]
    while stack:
        e = stack.pop()
        if e is None or id(e) in seen:
            continue
        seen.add(id(e))
        if isinstance(e, OSError) and e.errno in _CODES:
            return True
        if isinstance(e, BaseException) and any(t in str(e).lower() for t in _TEXTS):
            return True  # Ray re-raises a worker's OSError as text inside its own error types
        stack += [getattr(e, "__cause__", None), getattr(e, "__context__", None), getattr(e, "cause", None)]
    return False


def tree_bytes(*folders: Path) -> int:
    """Bytes of the regular files under `folders` (missing ones count 0)."""
    total = 0
    for folder in folders:
        for dirpath, _, files in os.walk(folder):
            for name in files:
                try:
                    total += os.lstat(os.path.join(dirpath, name)).st_size
                except OSError:
                    pass
    return total


def _mib(n: float) -> str:
    return f"{n / 2**20:.1f} MiB"


def disk_full(disk: Path, written: int, need: int | None, step: str, resumable: int) -> DiskFullError:
    """The error for a run that ran out of room on `disk` during `step`.

    `written`: bytes the run had written beside OUT when it failed; `need`: the estimated total
    the run needs there (None when no estimate exists yet); `resumable`: committed work items
    the next run reuses."""
    probe = Path(disk)
    while not probe.exists() and probe != probe.parent:
        probe = probe.parent
    usage = shutil.disk_usage(probe)
    lines = [f"the disk holding {disk} is full ({_mib(usage.free)} free of {_mib(usage.total)}) "
             f"while {step}: the run had written {_mib(written)} there"]
    if need is not None:
        lines.append(f"it needs about {_mib(need)} in all (about {_mib(max(need - written, 0))} more; "
                     "an estimate from the candidate parts: the shards, OUT/cache and the report)")
    lines.append("nothing was written to OUT. Free space on that disk, or choose an --output on a larger one, "
                 "then run the same command again: it first clears the partial folders beside OUT"
                 + (f" and reuses the {resumable} finished work items" if resumable else ""))
    return DiskFullError("; ".join(lines))


def estimate_need(tokenizers: Path, parts: list[Path], formats: int) -> int:
    """Bytes a run writes beside OUT, from its candidate parts: the tokenizers' copy, the parts
    twice (work folder and OUT/cache), the shards in each format (about a part's size each), and
    shuffle files and the report (about one more each)."""
    part_bytes = sum(os.path.getsize(p) for p in parts if os.path.exists(p))
    return tree_bytes(tokenizers) + part_bytes * (2 + formats + 2) + 2**20
