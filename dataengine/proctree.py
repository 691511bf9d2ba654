"""This process and its descendants (a local Ray's raylet, GCS and workers), read from /proc.

`TreeRss` samples their resident memory in a thread: the hostile-input test and
`bench/scaling.py` use it to bound the peak of a whole run. Linux only.
"""
from __future__ import annotations

import os
import threading
from pathlib import Path


def _stat_fields(pid: int | str) -> list[str]:
    """The fields of /proc/PID/stat after the command name (which may hold spaces and parentheses)."""
    return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()


def process_table() -> dict[int, list[str]]:
    """{pid: stat fields after the name} of every process visible now; field 1 is the parent pid."""
    table = {}
    for d in os.listdir("/proc"):
        if d.isdigit():
            try:
                table[int(d)] = _stat_fields(d)
            except (OSError, ValueError, IndexError):  # the process ended while we looked
                pass
    return table


def descendants(table: dict[int, list[str]], root: int | None = None) -> list[int]:
    """`root` (default: this process) and every process below it, parents before children."""
    children: dict[int, list[int]] = {}
    for pid, fields in table.items():
        children.setdefault(int(fields[1]), []).append(pid)
    root = os.getpid() if root is None else root
    out, frontier, seen = [], [root], {root}
    while frontier:
        pid = frontier.pop()
        out.append(pid)
        for c in children.get(pid, []):
            if c not in seen:
                seen.add(c)
                frontier.append(c)
    return out


class Sampler:
    """Calls `sample()` every `every_s` seconds in a thread while the `with` block runs, and once at its end."""

    every_s: float = 0.1

    def sample(self) -> None:
        raise NotImplementedError

    def _loop(self) -> None:
        while not self._stop.wait(self.every_s):
            self.sample()

    def __enter__(self):
        self._stop = threading.Event()
        self.sample()
        self._thread = threading.Thread(target=self._loop, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()
        self.sample()


class TreeRss(Sampler):
    """Peak resident memory of `root` (default: this process) and all its descendants, sampled
    every `every_s` in a thread.

    `peak_total` is the largest sum over the tree seen in one sample, `peak_one` the
    largest single process (bytes). A sum of RSS counts a shared page once per process
    that maps it (torch's libraries in every worker: hundreds of MB each); with `pss=True`
    the proportional set size is summed too (`peak_pss`: each shared page split among the
    processes that share it, so the sum is the memory the tree holds).
    """

    def __init__(self, every_s: float = 0.1, root: int | None = None, pss: bool = False):
        self.every_s, self.root, self.peak_total, self.peak_one, self.samples = every_s, root, 0, 0, 0
        self.pss, self.peak_pss = pss, 0
        self._page = os.sysconf("SC_PAGE_SIZE")

    def sample(self) -> int:
        rss, pss = [], 0
        for pid in descendants(process_table(), self.root):
            try:
                rss.append(int(Path(f"/proc/{pid}/statm").read_text().split()[1]) * self._page)
                if self.pss:
                    pss += _pss(pid)
            except (OSError, ValueError, IndexError):
                pass
        self.peak_total = max(self.peak_total, sum(rss))
        self.peak_one = max(self.peak_one, max(rss, default=0))
        self.peak_pss = max(self.peak_pss, pss)
        self.samples += 1
        return sum(rss)

    def as_dict(self) -> dict:
        out = {"peak_tree_rss_mib": round(self.peak_total / 2**20, 1),
               "peak_single_process_rss_mib": round(self.peak_one / 2**20, 1), "samples": self.samples}
        if self.pss:
            out["peak_tree_pss_mib"] = round(self.peak_pss / 2**20, 1)
        return out


def _pss(pid: int) -> int:
    """Proportional set size of `pid` in bytes (/proc/PID/smaps_rollup)."""
    for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
        if line.startswith("Pss:"):
            return int(line.split()[1]) * 1024
    return 0
