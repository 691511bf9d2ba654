"""Packing documents into fixed-length rows, with document boundaries.

Documents are laid end to end; a row takes `context + 1` tokens and the next
row starts `context` tokens later (the last token of a row is only a label, as
in nanoGPT), so no token is lost and a document longer than what is left of a
row continues in the next one. Every token carries:

    pos     its position inside its document (restarts at 0 at every document;
            a continued document keeps counting; a pre-packed row, with a
            `documents` column, restarts at each of its documents)
    doc     the index of its document fragment within the row (block-diagonal attention)
    target  whether it carries loss (target_spans; all tokens for pretraining)

`inputs_and_labels` turns a row into model inputs and labels. A label is kept
only when it is a target and belongs to the same document as the position that
predicts it: nothing is ever predicted across a document boundary.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

PAD_DOC = -1  # doc id of padding (only at the end of a finite pass, e.g. evaluation)


@dataclass
class Piece:
    """A run of consecutive tokens of one shard row (one document, or several when the row was pre-packed)."""
    tokens: np.ndarray   # int32 [n]
    target: np.ndarray   # bool [n]: carries loss
    pos: np.ndarray      # int [n]: position inside its document
    start: np.ndarray    # bool [n]: first token of a document


def build_row(pieces: list[Piece], length: int, pad_id: int = 0) -> dict[str, np.ndarray]:
    """Concatenate pieces into one row of exactly `length` tokens (padding the tail when short).

    Document ids count the documents of the row from 0: a new one starts at every document start and at
    the first token of every piece (a document continued from the previous row is a fragment of its own).
    """
    lengths = np.array([len(p.tokens) for p in pieces], dtype=np.int64)
    total = int(lengths.sum())
    if total > length:
        raise ValueError(f"pieces hold {total} tokens, more than the row length {length}")
    tokens = np.full(length, pad_id, dtype=np.int64)
    target = np.zeros(length, dtype=bool)
    pos = np.zeros(length, dtype=np.int64)
    doc = np.full(length, PAD_DOC, dtype=np.int64)
    if total:
        tokens[:total] = np.concatenate([p.tokens for p in pieces])
        target[:total] = np.concatenate([p.target for p in pieces])
        pos[:total] = np.concatenate([p.pos for p in pieces])
        start = np.concatenate([p.start for p in pieces]).astype(bool)
        start[(np.cumsum(lengths) - lengths)[lengths > 0]] = True
        doc[:total] = np.cumsum(start) - 1
    return {"tokens": tokens, "target": target, "pos": pos, "doc": doc}


def inputs_and_labels(row: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """A row of T + 1 tokens -> inputs, positions, doc ids, labels and label mask, each of length T."""
    tokens, doc = row["tokens"], row["doc"]
    same_doc = (doc[1:] == doc[:-1]) & (doc[1:] != PAD_DOC)
    return {
        "inputs": tokens[:-1],
        "pos": row["pos"][:-1],
        "doc": doc[:-1],
        "labels": tokens[1:],
        "mask": row["target"][1:] & same_doc,
    }


def target_mask(lengths: np.ndarray, span_rows: np.ndarray, span_start: np.ndarray,
                span_end: np.ndarray) -> np.ndarray:
    """Flat bool mask over all tokens of a shard, True inside any target span (vectorised).

    `lengths[i]` is the token count of row i; span k belongs to row `span_rows[k]`
    and covers [span_start[k], span_end[k]) of it (clipped to the row).
    """
    lengths = np.asarray(lengths, dtype=np.int64)
    offsets = np.concatenate([[0], np.cumsum(lengths)])
    total = int(offsets[-1])
    diff = np.zeros(total + 1, dtype=np.int64)
    if len(span_rows):
        row_len = lengths[span_rows]
        s = np.clip(np.asarray(span_start, np.int64), 0, row_len)
        e = np.clip(np.asarray(span_end, np.int64), 0, row_len)
        keep = e > s
        base = offsets[span_rows][keep]
        np.add.at(diff, base + s[keep], 1)
        np.add.at(diff, base + e[keep], -1)
    return np.cumsum(diff[:-1]) > 0


def document_positions(total: int, doc_starts: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per-token position in its document and document-start flags, from the flat start indices (vectorised)."""
    start = np.zeros(total, dtype=bool)
    start[np.asarray(doc_starts, dtype=np.int64)] = True
    if total:
        start[0] = True
    idx = np.arange(total, dtype=np.int64)
    last_start = np.maximum.accumulate(np.where(start, idx, 0)) if total else idx
    return idx - last_start, start
