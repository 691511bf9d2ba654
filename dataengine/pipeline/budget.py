"""Per-item budgets: every sample is decoded in a watched child process, within wall, CPU and memory limits.

A hostile file can make a decoder spin (a quadratic parse), stall (a blocking read) or grow
without bound (a bomb the header caps did not foresee). Caps on header claims stop the known
cases before any allocation; this is the net under them. A worker (`pipeline.items.ItemWorker`)
decodes each unit in a child interpreter of its own (`python -m dataengine.pipeline.budget`,
started once and again after each kill) and watches it every `TICK_S`:

    wall time since the unit was handed over   > decode.budget.wall_s    -> over_wall_budget
    CPU time of the child (all its threads)    > decode.budget.cpu_s     -> over_cpu_budget
    resident memory the child grew by          > decode.budget.memory_mb -> over_memory_budget

Over any of them the child is killed (SIGKILL) and the unit is a reject naming the budget,
with its caption and sidecar; the next unit gets a fresh child. A child that dies on its own
(a native decoder's segfault, the kernel's OOM killer) is tried again in a fresh child, up to
`execution.max_unit_crashes` times in all, then the unit is `decoder_crashed`: the worker
itself survives. Memory is sampled, so a bomb may overshoot by what it allocates in one tick.

Tokenizing runs in the worker itself (the models are loaded there), watched by a `Watchdog` thread
with the same budgets: over one, it tells the crash ledger which budget and kills the worker; the
ledger (`pipeline.isolation`) pins the death on the unit being tokenized, and after
`execution.max_unit_crashes` such deaths the unit is a reject (stage "tokenize") naming the budget.

Only strings and Arrow cross the pipe: the unit as JSON, the decoded rows as an Arrow IPC
stream of `DECODED_SCHEMA` (no pickle, so a subverted decoder cannot run code in the worker).
The child computes exactly what `DecodeStage.decode_unit` computes in process.

Fault injection for the tests: `DATAENGINE_STRAIN_ON="sleep:<part of a media path>,spin:...,
alloc:..."` makes the child sleep, spin or allocate without end on a matching unit
(`DATAENGINE_TOKENIZE_STRAIN_ON`, in `pipeline.items`, stalls tokenizing).
"""
from __future__ import annotations

import dataclasses
import json
import os
import select
import signal
import struct
import subprocess
import sys
import time
from pathlib import Path

import pyarrow as pa

STRAIN_ENV = "DATAENGINE_STRAIN_ON"
TICK_S = 0.02  # how often the child is looked at while it works
_LEN = struct.Struct("<Q")


# ---------------------------------------------------------------------------------------- framing
def _send(fd: int, payload: bytes) -> None:
    data = _LEN.pack(len(payload)) + payload
    while data:
        data = data[os.write(fd, data):]


def _read_exact(fd: int, n: int) -> bytes | None:
    """`n` bytes from `fd`; None at end of file."""
    out = bytearray()
    while len(out) < n:
        chunk = os.read(fd, n - len(out))
        if not chunk:
            return None
        out += chunk
    return bytes(out)


def _recv(fd: int) -> bytes | None:
    head = _read_exact(fd, _LEN.size)
    return None if head is None else _read_exact(fd, _LEN.unpack(head)[0])


def _rows_to_bytes(rows: list[dict]) -> bytes:
    from dataengine.pipeline.decode_stage import DECODED_SCHEMA

    sink = pa.BufferOutputStream()
    table = pa.Table.from_pylist(rows, schema=DECODED_SCHEMA)
    with pa.ipc.new_stream(sink, DECODED_SCHEMA) as w:
        w.write_table(table)
    return sink.getvalue().to_pybytes()


def _rows_from_bytes(data: bytes) -> list[dict]:
    rows = pa.ipc.open_stream(data).read_all().to_pylist()
    for r in rows:
        r.pop("unit_rows", None)  # set by the caller, per unit
    return rows


# ---------------------------------------------------------------------------------------- the child
def _stage_config(stage) -> str:
    """The DecodeStage's settings as JSON (its fields are plain data)."""
    d = {f.name: getattr(stage, f.name) for f in dataclasses.fields(stage)}
    d["decode"] = dataclasses.asdict(stage.decode)
    d["storage_options"] = dataclasses.asdict(stage.storage_options)
    d["modalities"] = sorted(stage.modalities)
    d["reads"], d["writes"], d["ledger"] = list(stage.reads), list(stage.writes), None
    return json.dumps(d)


def _stage_from(config: str):
    from dataengine import storage
    from dataengine.pipeline.decode_stage import DecodeStage
    from dataengine.config import build
    from dataengine.recipe import Decode

    d = json.loads(config)
    d["decode"] = build(Decode, d["decode"], "decode")
    d["storage_options"] = storage.StorageOptions(**d["storage_options"])
    d["modalities"] = frozenset(d["modalities"])
    d["reads"], d["writes"] = tuple(d["reads"]), tuple(d["writes"])
    return DecodeStage(**d)


def strain(media: str) -> None:
    """Fault injection (`DATAENGINE_STRAIN_ON`): never return on a matching unit."""
    for rule in filter(None, (os.environ.get(STRAIN_ENV) or "").split(",")):
        how, _, needle = rule.partition(":")
        if needle and needle in media:
            if how == "sleep":
                time.sleep(3600)
            hog = []
            while True:  # spin (CPU) or allocate and touch 64 MiB at a time (memory)
                if how == "alloc":
                    hog.append(bytearray(64 * 2**20))
                    hog[-1][::4096] = b"x" * len(hog[-1][::4096])


def warm_up() -> None:
    """Load what decoding loads lazily (torch for resampling, the VAD and language models) before the
    first unit, so no unit's budget pays for it."""
    import torch  # noqa: F401
    import torchaudio.transforms  # noqa: F401

    from dataengine.curate import stats_audio, stats_text
    from dataengine.decode import sensor  # noqa: F401

    stats_text._identifier()
    stats_audio._silero()


def _serve() -> None:
    """The child: read the stage, then units one by one; answer each with its decoded rows."""
    fin, fout = sys.stdin.fileno(), sys.stdout.fileno()
    sys.stdout = sys.stderr  # a library's print must not corrupt the frames
    config = _recv(fin)
    if config is None:
        return
    stage = _stage_from(config.decode())
    warm_up()
    _send(fout, b"ready")
    while (msg := _recv(fin)) is not None:
        unit = json.loads(msg)
        strain(unit["media"] or "")
        _send(fout, _rows_to_bytes(stage.decode_unit(unit)))


# ---------------------------------------------------------------------------------------- the worker side
def over_budget(b, wall: float, cpu: float, grew: int, what: str = "decoding") -> tuple[str, str] | None:
    """(reason, detail) when `wall` / `cpu` seconds or `grew` bytes of memory are over the budget `b`."""
    fix = "killed. Raise the budget if such files are legitimate"
    if wall > b.wall_s:
        return "over_wall_budget", f"{what} took over {b.wall_s:g} s of wall time (decode.budget.wall_s); {fix}"
    if cpu > b.cpu_s:
        return "over_cpu_budget", f"{what} used over {b.cpu_s:g} s of CPU (decode.budget.cpu_s); {fix}"
    if grew > b.memory_mb * 2**20:  # above what the idle process holds (its libraries and models)
        return "over_memory_budget", (f"{what} took {grew / 2**20:.0f} MiB more memory, over decode.budget.memory_mb "
                                      f"= {b.memory_mb}; {fix}")
    return None


class Watchdog:
    """The same budgets for work inside the worker itself (tokenizing): a thread looks at this process
    every 0.1 s while `watch()` is open; over a budget it calls `on_over(reason)` (the crash ledger learns
    why) and kills the process, which the ledger then pins on the unit being worked on."""

    def __init__(self, budget, on_over):
        import threading

        self.budget, self.on_over, self._open = budget, on_over, None
        threading.Thread(target=self._run, daemon=True, name="dataengine-budget-watchdog").start()

    def watch(self):
        import contextlib

        @contextlib.contextmanager
        def scope():
            self._open = (time.monotonic(), time.process_time(), _own_rss())
            try:
                yield
            finally:
                self._open = None
        return scope()

    def _run(self) -> None:
        while True:
            time.sleep(0.1)
            opened = self._open
            if opened is None:
                continue
            t0, cpu0, rss0 = opened
            over = over_budget(self.budget, time.monotonic() - t0, time.process_time() - cpu0, _own_rss() - rss0,
                               "tokenizing")
            if over and self._open is opened:
                self.on_over(over[0])
                os.kill(os.getpid(), signal.SIGKILL)


def _own_rss() -> int:
    try:
        return int(Path("/proc/self/statm").read_text().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, IndexError, ValueError):
        return 0


class WatchedDecode:
    """`stage.decode_unit(unit)` in a watched child process, within `stage.decode.budget`."""

    def __init__(self, stage, max_crashes: int = 2):
        self.stage, self.budget, self.max_crashes = stage, stage.decode.budget, max(1, max_crashes)
        self._proc: subprocess.Popen | None = None
        self._page, self._clk = os.sysconf("SC_PAGE_SIZE"), os.sysconf("SC_CLK_TCK")

    def __call__(self, unit: dict) -> list[dict]:
        deaths = []
        while len(deaths) < self.max_crashes:
            self._ensure()
            t0, cpu0, rss0 = time.monotonic(), self._cpu_s(), self._rss()
            try:
                _send(self._proc.stdin.fileno(), json.dumps(unit).encode())
            except OSError:
                deaths.append(self._reap())
                continue
            fd = self._proc.stdout.fileno()
            while True:
                ready, _, _ = select.select([fd], [], [], TICK_S)
                if ready:
                    data = _recv(fd)
                    if data is None:  # the child died on its own
                        deaths.append(self._reap())
                        break
                    return _rows_from_bytes(data)
                over = over_budget(self.budget, time.monotonic() - t0, self._cpu_s() - cpu0, self._rss() - rss0)
                if over:
                    self.close()
                    return self.stage._media_failed(unit, None, *over)
        detail = (f"the decode process died on this file {len(deaths)} times ({', '.join(deaths)}; a native "
                  f"decoder's crash or the kernel's out-of-memory killer), so it was not decoded again "
                  f"(execution.max_unit_crashes); the worker survived")
        return self.stage._media_failed(unit, None, "decoder_crashed", detail)

    def _ensure(self) -> None:
        if self._proc is not None and self._proc.poll() is None:
            return
        env = {**os.environ, "PYTHONPATH": os.pathsep.join(p for p in sys.path if p)}
        self._proc = subprocess.Popen([sys.executable, "-m", "dataengine.pipeline.budget"], stdin=subprocess.PIPE,
                                      stdout=subprocess.PIPE, env=env, cwd=str(Path.cwd()))
        _send(self._proc.stdin.fileno(), _stage_config(self.stage).encode())
        if _recv(self._proc.stdout.fileno()) != b"ready":
            code = self._proc.wait()
            raise RuntimeError(f"the decode child process failed to start (exit {code}); see the worker's stderr")

    def _reap(self) -> str:
        proc, self._proc = self._proc, None
        code = proc.wait()
        for f in (proc.stdin, proc.stdout):
            try:
                f.close()
            except OSError:
                pass
        return f"signal {signal.Signals(-code).name}" if code < 0 else f"exit {code}"

    def _stat(self) -> list[str]:
        try:
            return Path(f"/proc/{self._proc.pid}/stat").read_text().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            return []

    def _cpu_s(self) -> float:
        f = self._stat()
        return (int(f[11]) + int(f[12])) / self._clk if len(f) > 12 else 0.0  # utime + stime, all threads

    def _rss(self) -> int:
        try:
            return int(Path(f"/proc/{self._proc.pid}/statm").read_text().split()[1]) * self._page
        except (OSError, IndexError, ValueError):
            return 0

    def close(self) -> None:
        if self._proc is not None:
            try:
                self._proc.kill()
            except OSError:
                pass
            self._reap()

    def __del__(self):
        self.close()


if __name__ == "__main__":
    _serve()
