"""The training loader: a seeded global permutation, sliced by rank and worker, packed into rows.

Epoch e orders all N sequences of the split by `permutation(N)` seeded with
(seed, e). Rank r of W takes every W-th entry starting at r, and worker w of K
of that every K-th entry starting at w: across ranks and workers every sequence
is read exactly once per epoch. Under a mixture plan (`ShardSource`) the N
sequences are the virtual rows: a row with c copies is c entries of the
permutation, so its copies land apart in the epoch, each read once. Each worker packs its own slice into batches
(`dataengine.train.pack`), so a worker's stream is a pure function of its
state (epoch, cursor into its slice, token offset inside that sequence).

Batches come from the workers round-robin (worker k serves batches k, k+K, ...).
With K > 1 the workers are DataLoader processes; each batch carries its
worker's state after producing it, so the loader state (the latest state of
every worker + the number of batches consumed) is exact, whatever was
prefetched. A resumed loader restarts every worker from its saved state and
rotates the round-robin so the batch order continues unbroken.
"""
from __future__ import annotations

import numpy as np
import torch
from torch.utils.data import DataLoader, IterableDataset

from dataengine.errors import RecipeError
from dataengine.train.pack import Piece, build_row, inputs_and_labels
from dataengine.train.source import ShardSource


def epoch_order(n: int, seed: int, epoch: int, rank: int = 0, world: int = 1, worker: int = 0,
                workers: int = 1) -> np.ndarray:
    """Global indices that (rank, worker) reads in `epoch`, in order."""
    perm = np.random.default_rng([seed, epoch]).permutation(n)
    return perm[rank::world][worker::workers]


def fresh_state() -> dict:
    return {"epoch": 0, "cursor": 0, "offset": 0}


class WorkerStream:
    """One worker's slice of the split, packed into rows of `context + 1` tokens."""

    def __init__(self, source: ShardSource, *, context: int, batch_size: int, seed: int, rank: int = 0,
                 world: int = 1, worker: int = 0, workers: int = 1, state: dict | None = None,
                 modality_of=None, pad_id: int = 0, finite: bool = False):
        self.source, self.context, self.batch_size = source, context, batch_size
        self.seed, self.rank, self.world, self.worker, self.workers = seed, rank, world, worker, workers
        self.state = dict(state or fresh_state())
        self.modality_of = modality_of        # token ids -> modality index (np.int8), or None
        self.pad_id, self.finite = pad_id, finite
        self.exhausted = False
        self._order_epoch, self._order = -1, None
        if len(self._slice(0)) == 0:
            raise RecipeError(f"{len(source)} sequences cannot feed {world} ranks x {workers} workers: "
                              "lower data.workers (or use fewer GPUs)")

    def _slice(self, epoch: int) -> np.ndarray:
        if epoch != self._order_epoch:
            self._order = epoch_order(len(self.source), self.seed, epoch, self.rank, self.world, self.worker,
                                      self.workers)
            self._order_epoch = epoch
        return self._order

    def next_row(self) -> dict[str, np.ndarray] | None:
        """The next packed row (T + 1 tokens) and advance the state by T tokens; None when a finite pass ends."""
        if self.exhausted:
            return None
        need, pieces = self.context + 1, []
        epoch, cursor, offset = self.state["epoch"], self.state["cursor"], self.state["offset"]
        advance_to = None  # state after `context` tokens: where the next row starts
        taken = 0
        while taken < need:
            order = self._slice(epoch)
            if cursor >= len(order):
                if self.finite:
                    break
                epoch, cursor, offset = epoch + 1, 0, 0
                continue
            tokens, target, pos, start = self.source.document(int(order[cursor]))
            n = min(len(tokens) - offset, need - taken)
            if n > 0:
                cut = slice(offset, offset + n)
                pieces.append(Piece(tokens[cut], target[cut], pos[cut], start[cut]))
            if advance_to is None and taken + n >= self.context:  # the token at row index T lives here
                k = offset + (self.context - taken)
                advance_to = (epoch, cursor, k) if k < len(tokens) else (epoch, cursor + 1, 0)
            taken += max(n, 0)
            offset += max(n, 0)
            if offset >= len(tokens):
                cursor, offset = cursor + 1, 0
        if taken == 0 or (self.finite and taken <= 1):
            self.exhausted = True
            return None
        if advance_to is None:  # a finite pass ran out inside this row
            self.exhausted = True
        else:
            self.state = {"epoch": advance_to[0], "cursor": advance_to[1], "offset": advance_to[2]}
        return build_row(pieces, need, self.pad_id)

    def next_batch(self) -> dict[str, np.ndarray] | None:
        rows = []
        for _ in range(self.batch_size):
            row = self.next_row()
            if row is None:
                break
            rows.append(inputs_and_labels(row))
        if not rows:
            return None
        batch = {k: np.stack([r[k] for r in rows]) for k in rows[0]}
        if self.modality_of is not None:
            batch["label_mod"] = self.modality_of(batch["labels"]).astype(np.int64)
        return batch


def to_torch(batch: dict) -> dict:
    return {k: (torch.from_numpy(v) if isinstance(v, np.ndarray) else v) for k, v in batch.items()}


class _Workers(IterableDataset):
    """DataLoader face of K worker streams; DataLoader worker i runs logical worker (i + rotation) % K."""

    def __init__(self, make_stream, states: list[dict], rotation: int):
        self.make_stream, self.states, self.rotation = make_stream, states, rotation

    def __iter__(self):
        info = torch.utils.data.get_worker_info()
        k = len(self.states)
        logical = ((info.id if info else 0) + self.rotation) % k
        stream = self.make_stream(logical, self.states[logical])
        while True:
            batch = stream.next_batch()
            yield to_torch(batch) | {"worker": logical, "state": dict(stream.state)}


class PackedLoader:
    """Infinite iterator of packed batches for one rank; `state_dict()` / `load_state_dict()` for exact resume.

    `processes=False` runs the K workers in this process (same batches, same order: used by tests and
    by K = 1).
    """

    def __init__(self, source: ShardSource, *, context: int, batch_size: int, seed: int, workers: int = 1,
                 rank: int = 0, world: int = 1, modality_of=None, processes: bool | None = None):
        self.source, self.context, self.batch_size, self.seed = source, context, batch_size, seed
        self.workers, self.rank, self.world = workers, rank, world
        self.modality_of = modality_of
        self.processes = workers > 1 if processes is None else processes
        self.states = [fresh_state() for _ in range(workers)]
        self.consumed = 0
        self._it = None

    def _stream(self, worker: int, state: dict) -> WorkerStream:
        return WorkerStream(self.source, context=self.context, batch_size=self.batch_size, seed=self.seed,
                            rank=self.rank, world=self.world, worker=worker, workers=self.workers,
                            state=state, modality_of=self.modality_of)

    def state_dict(self) -> dict:
        return {"seed": self.seed, "rank": self.rank, "world": self.world, "workers": self.workers,
                "context": self.context, "batch_size": self.batch_size, "consumed": self.consumed,
                "states": [dict(s) for s in self.states], "fingerprint": self.source.fingerprint()}

    def load_state_dict(self, state: dict) -> None:
        mine = self.state_dict()
        for key in ("seed", "rank", "world", "workers", "context", "batch_size"):
            if state[key] != mine[key]:
                raise RecipeError(f"the checkpoint's loader has {key}={state[key]}, this run {mine[key]}; "
                                  f"resume with the same data settings and number of processes")
        if state["fingerprint"] != mine["fingerprint"]:
            raise RecipeError("the shards differ from the ones the checkpoint was trained on (manifest "
                              "fingerprint changed: shards, vocabulary, data.tasks or the mixture plan / "
                              "data.mixture); point --shards at the original output with the original data "
                              "settings, or start a new run")
        self.states = [dict(s) for s in state["states"]]
        self.consumed = int(state["consumed"])
        self._it = None

    def __iter__(self):
        return self

    def __next__(self) -> dict:
        if self._it is None:
            self._it = self._start()
        batch = next(self._it)
        self.states[batch.pop("worker")] = batch.pop("state")
        self.consumed += 1
        return batch

    def _start(self):
        rotation = self.consumed % self.workers
        if self.processes:
            ds = _Workers(self._stream, [dict(s) for s in self.states], rotation)
            return iter(DataLoader(ds, batch_size=None, num_workers=self.workers, prefetch_factor=4,
                                   persistent_workers=False))
        return self._round_robin(rotation)

    def _round_robin(self, rotation: int):
        streams = [self._stream(w, dict(self.states[w])) for w in range(self.workers)]
        i = rotation
        while True:
            s = streams[i]
            yield to_torch(s.next_batch()) | {"worker": i, "state": dict(s.state)}
            i = (i + 1) % self.workers


def finite_batches(source: ShardSource, *, context: int, batch_size: int, seed: int, rank: int = 0,
                   world: int = 1, max_batches: int | None = None, modality_of=None):
    """One pass over this rank's slice of epoch 0 (evaluation): the last row is padded (mask False)."""
    stream = WorkerStream(source, context=context, batch_size=batch_size, seed=seed, rank=rank, world=world,
                          modality_of=modality_of, finite=True)
    n = 0
    while max_batches is None or n < max_batches:
        batch = stream.next_batch()
        if batch is None:
            return
        yield to_torch(batch)
        n += 1
