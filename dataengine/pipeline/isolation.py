"""Crash isolation: a sample that kills its worker every time, decoding or tokenizing, is rejected,
not retried forever.

A Python exception in a decoder is already a reject (`decoder_error`). A HARD
crash is not: a segfault in a native decoder, `os._exit`, an out-of-memory kill
ends the worker process, and Ray Data retries the whole decode task (or, when
decode is fused into the tokenize actors, restarts the actor and retries the
call) without limit by default (`max_retries=-1`; ray 2.60), dying again on the
same file forever. This module turns that into a reject row:

- The driver starts one small named Ray actor per run, the crash ledger
  (`RunLedger`). An actor, not local files: decode tasks and their retries may
  run on any node of a cluster.
- The decode stage (`DecodeStage.__call__`) opens a `UnitGuard` per batch: one
  `ray.get` tells the ledger "attempt A begins units [...]" and learns which of
  them must not be decoded again; a fire-and-forget "finished" closes it. That
  is all a healthy batch costs: an actor call per unit costs about 0.6 ms on a
  busy 2-core machine, more than decoding a short text file.
- A unit is only handed to a decode attempt again when the attempt that held it
  failed (Ray retries a failed task or actor call; it never runs one twice
  otherwise). So when a batch begins, every still-open attempt holding one of
  its units belonged to a process that died.
- Attribution: the first death of a batch is pinned on no unit (nobody knew
  which one was being decoded); it makes the batch's units suspects. An attempt
  over suspects runs "careful": it reports each unit before decoding it and
  waits for the acknowledgement (a fire-and-forget message can die with the
  process), and reports "finished" the same way. When a careful attempt dies,
  the crash is charged to the LAST unit it started, exactly; the units it
  finished before and those it never reached are innocent and decode normally.
- Tokenizing is watched the same way: a careful attempt tokenizes its rows one
  at a time and reports each unit before tokenizing it (stage "tokenize"), so a
  tokenizer that dies on a sample (a native kernel's fault, an out-of-memory
  kill) is pinned on that sample. Outside careful attempts tokenizing is
  batched and reports nothing.
- A unit charged `max_unit_crashes` times is not decoded again: it becomes a
  reject (stage "decode", reason "decoder_crashed", or stage "tokenize",
  reason "tokenizer_crashed", after the stage of its last crash) with its
  caption/sidecar.
  A sample that always crashes so kills max_unit_crashes + 1 workers. Each death
  either charges a unit or turns watching on, so Ray's unbounded retries end.
  (`run.py` passes no `max_retries`: any remote argument on the decode stage
  would stop Ray Data fusing it into the tokenize actors.)

Without a ledger (a DecodeStage used directly: tokenizer fitting, benches) the
guard is a no-op and decoding behaves as before.

Fault injection for the tests: `DATAENGINE_CRASH_ON=<substring of a media path>`
makes the decode worker kill itself (SIGSEGV) on a matching unit, every time;
`DATAENGINE_TOKENIZE_CRASH_ON` does the same when tokenizing the unit's rows.
"""
from __future__ import annotations

import contextlib
import os
import signal
import uuid
from dataclasses import dataclass, field

CRASH_ENV = "DATAENGINE_CRASH_ON"
TOKENIZE_CRASH_ENV = "DATAENGINE_TOKENIZE_CRASH_ON"


@dataclass
class _Attempt:
    units: tuple[str, ...]
    where: str                  # "pid P on node N": where to find the dead worker's log
    careful: bool               # it reports each unit before decoding it, and waits for the acknowledgement
    last: str | None = None     # the unit it was working on (None: it died before starting one, or between)
    stage: str = "decode"       # what it was doing to `last`: "decode" or "tokenize"


@dataclass
class CrashLedger:
    """The ledger's state and attribution rules; plain Python (tested without Ray), run as a Ray actor."""

    max_crashes: int
    crashes: dict[str, int] = field(default_factory=dict)        # unit_id -> crashes charged to it
    crash_sites: dict[str, list[str]] = field(default_factory=dict)  # unit_id -> where each crash happened
    crash_stage: dict[str, str] = field(default_factory=dict)        # unit_id -> stage of its last crash
    suspects: set[str] = field(default_factory=set)              # units of batches whose worker died
    _open: dict[str, _Attempt] = field(default_factory=dict)     # attempt -> still running (or dead)
    _holders: dict[str, set[str]] = field(default_factory=dict)  # unit_id -> open attempts holding it

    def begin(self, attempt: str, unit_ids: list[str], where: str = "") -> dict:
        """Register a batch attempt; settle the dead attempts that held its units.

        Returns {"reject": {unit_id: crashes} for units not to decode again,
                 "crashes": {unit_id: crashes} for every unit charged before,
                 "sites": {unit_id: [where, ...]} for the rejected ones,
                 "stages": {unit_id: "decode" | "tokenize"} the stage of their last crash,
                 "careful": whether to report each unit (the batch holds suspects)}.
        """
        dead = sorted({a for u in unit_ids for a in self._holders.get(u, ()) if a != attempt})
        for a in dead:
            gone = self._close(a)
            self.suspects.update(gone.units)
            if gone.careful and gone.last is not None:  # a careful attempt knew what it was decoding
                self.crashes[gone.last] = self.crashes.get(gone.last, 0) + 1
                self.crash_sites.setdefault(gone.last, []).append(gone.where)
                self.crash_stage[gone.last] = gone.stage
        self._close(attempt)  # a re-sent begin of the same attempt starts it afresh
        charged = {u: self.crashes[u] for u in unit_ids if u in self.crashes}
        reject = {u: n for u, n in charged.items() if n >= self.max_crashes}
        careful = any(u in self.suspects and u not in reject for u in unit_ids)
        self._open[attempt] = _Attempt(tuple(unit_ids), where, careful)
        for u in unit_ids:
            self._holders.setdefault(u, set()).add(attempt)
        return {"reject": reject, "crashes": charged, "sites": {u: self.crash_sites[u] for u in reject},
                "stages": {u: self.crash_stage[u] for u in reject}, "careful": careful}

    def started(self, attempt: str, unit_id: str | None, stage: str = "decode") -> None:
        a = self._open.get(attempt)
        if a is not None:
            a.last, a.stage = unit_id, stage

    def finished(self, attempt: str) -> None:
        self._close(attempt)

    def summary(self) -> dict[str, int]:
        """{unit_id: crashes} over the run (for logs and tests)."""
        return dict(self.crashes)

    def _close(self, attempt: str) -> _Attempt | None:
        a = self._open.pop(attempt, None)
        for u in a.units if a else ():
            held = self._holders.get(u)
            if held is not None:
                held.discard(attempt)
                if not held:
                    del self._holders[u]
        return a


# ---------------------------------------------------------------------------------------- the driver side
class RunLedger:
    """The driver's handle on the run's ledger actor: `name` goes to `DecodeStage.ledger`; `close()` at the end."""

    def __init__(self, max_crashes: int):
        import ray

        self.name = f"dataengine-crash-ledger-{uuid.uuid4().hex}"
        self._actor = ray.remote(num_cpus=0, max_restarts=0)(_LedgerActor).options(name=self.name).remote(max_crashes)
        ray.get(self._actor.ready.remote())  # fail here, clearly, rather than in every decode task

    def summary(self) -> dict[str, int]:
        """{unit_id: crashes charged} so far."""
        import ray

        return ray.get(self._actor.summary.remote())

    def close(self) -> None:
        import ray

        with contextlib.suppress(Exception):
            ray.kill(self._actor)


class _LedgerActor(CrashLedger):
    def __init__(self, max_crashes: int):
        super().__init__(max_crashes)

    def ready(self) -> bool:
        return True


# ---------------------------------------------------------------------------------------- the worker side
_HANDLES: dict[str, object] = {}


class UnitGuard:
    """One work item's (or decode batch's) conversation with the ledger (a no-op without one): one round
    trip when it begins, one fire-and-forget message when it ends; per-unit messages only when careful."""

    def __init__(self, ledger_name: str | None, unit_ids: list[str]):
        self._actor = None
        self.verdict: dict = {"reject": {}, "crashes": {}, "sites": {}, "stages": {}, "careful": False}
        if not ledger_name:
            return
        import ray

        try:
            actor = _HANDLES.get(ledger_name) or ray.get_actor(ledger_name)
            _HANDLES[ledger_name] = actor
            self._attempt = uuid.uuid4().hex
            ctx = ray.get_runtime_context()
            where = f"pid {os.getpid()} on node {ctx.get_node_id()[:12]}"
            self.verdict = ray.get(actor.begin.remote(self._attempt, unit_ids, where))
            self._actor = actor
        except Exception:  # the ledger is gone (its node died): decode as without isolation
            _HANDLES.pop(ledger_name, None)

    def rejected(self, unit_id: str) -> int:
        """How many crashes a unit that must not be decoded again caused (0: decode it)."""
        return self.verdict["reject"].get(unit_id, 0)

    @property
    def careful(self) -> bool:
        """The attempt holds suspects: it reports each unit before working on it (tokenizing one at a time)."""
        return self._actor is not None and bool(self.verdict["careful"])

    def reason(self, unit_id: str) -> tuple[str, str]:
        """(stage, reason) of a rejected unit: where its last crash happened, and why when the worker
        knew (a budget its watchdog enforced: "tokenize:over_wall_budget")."""
        stage, _, cause = self.verdict["stages"].get(unit_id, "decode").partition(":")
        return stage, cause or ("tokenizer_crashed" if stage == "tokenize" else "decoder_crashed")

    def started(self, unit_id: str, stage: str = "decode") -> None:
        """Before decoding (or tokenizing) a unit: a careful attempt tells the ledger, and waits (a healthy
        batch says nothing)."""
        if self.careful:
            self._call(self._actor.started.remote(self._attempt, unit_id, stage))

    def paused(self) -> None:
        """Between units (decoded, not yet tokenized; tokenized, not yet written): a careful attempt tells the
        ledger no unit is being worked on, so a crash from here on is pinned on none."""
        if self._actor is not None and self.verdict["careful"]:
            self._call(self._actor.started.remote(self._attempt, None))

    def finished(self) -> None:
        if self._actor is None:
            return
        ref = self._actor.finished.remote(self._attempt)
        if self.verdict["careful"]:  # a crash after this batch (a fused tokenize stage) is not its units'
            self._call(ref)

    def _call(self, ref) -> None:
        import ray

        try:
            ray.get(ref)
        except Exception:  # the ledger is gone: finish the batch without isolation
            self._actor = None

    def detail(self, unit: dict) -> str:
        """The reject's detail: how often it crashed, where the logs are, how to reproduce it alone."""
        uid, kind = unit["unit_id"], unit["kind"]
        sites = "; ".join(self.verdict["sites"].get(uid, [])) or "unknown"
        stage, reason = self.reason(uid)
        if reason.startswith("over_"):
            return (f"tokenizing this sample went over decode.budget ({reason}) every time: the worker was killed "
                    f"{self.rejected(uid)} times on it (execution.max_unit_crashes). Workers: {sites}. Raise the "
                    f"budget if such samples are legitimate")
        if stage == "tokenize":
            return (f"tokenizing this sample killed the tokenizer worker process every time (a crash in a native "
                    f"kernel, or an out-of-memory kill): {self.rejected(uid)} deaths pinned on it after a first "
                    f"death of its work item, so it was not processed again (execution.max_unit_crashes). Dead "
                    f"workers: {sites}; logs in /tmp/ray/session_latest/logs/worker-*-PID.err on that node. It "
                    f"decoded fine. Reproduce it alone: `dataengine run RECIPE --input DIR` where DIR holds only "
                    f"{unit['media']} (and its caption)")
        fn = f"decode_{kind}" if kind in ("image", "audio", "video", "sensor") else "decode_text"
        return (f"decoding this file killed the decode worker process every time (a crash in a native decoder, "
                f"or an out-of-memory kill): {self.rejected(uid)} deaths pinned on it after a first death of its "
                f"batch, so it was not decoded again (execution.max_unit_crashes). Dead workers: {sites}; logs in "
                f"/tmp/ray/session_latest/logs/worker-*-PID.err on that node. Reproduce it in one process: "
                f"python -X faulthandler -c \"import dataengine.decode as D; D.{fn}(open('{unit['media']}', "
                f"'rb').read(), ...)\" (run from the source folder; faulthandler prints the native stack)")


def maybe_crash(media_path: str, env: str = CRASH_ENV) -> None:
    """Fault injection: die like a native decoder's segfault when `DATAENGINE_CRASH_ON` (or `env`) is in
    `media_path`."""
    needle = os.environ.get(env)
    if needle and needle in media_path:
        os.kill(os.getpid(), signal.SIGSEGV)
        os._exit(139)  # SIGSEGV was caught by a handler that returned: die anyway
