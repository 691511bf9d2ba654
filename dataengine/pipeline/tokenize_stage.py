"""Tokenize + compose stage: decoded items in, shared-vocabulary sequences out.

A callable class (it holds the tokenizer models), so Ray runs it as an actor
pool; the pool asks for a GPU only when the cluster has one, and the models move
to whatever device Ray assigned. It reads `DECODED_SCHEMA` and writes
`RESULT_SCHEMA`: the sequence columns of `SEQUENCE_SCHEMA` plus the reject
columns, with `status` telling which half is filled. Rejected items pass through
untouched, so every input reaches the writer.
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pyarrow as pa
import torch
from safetensors.numpy import load as st_load

from dataengine.compose.sequence import compose_chat, compose_media
from dataengine.shards.schema import REJECT_SCHEMA, SEQUENCE_SCHEMA
from dataengine.tokenize.registry import load_tokenizer
from dataengine.vocab import Vocab

RESULT_SCHEMA = pa.schema(
    [f for f in SEQUENCE_SCHEMA if f.name != "split"]
    + [pa.field("status", pa.string())]
    + [f for f in REJECT_SCHEMA if f.name not in ("source",)]
)


def load_tokenizers(tokenizers_dir: Path, roles: list[str]) -> dict:
    """Load every role's fitted tokenizer; video frames get the image tokenizer as a resource."""
    toks = {}
    for role in sorted(roles, key=lambda r: r == "video"):  # image before video
        extra = {"image_tokenizer": toks["image"]} if role == "video" else {}
        toks[role] = load_tokenizer(Path(tokenizers_dir) / role, **extra)
    return toks


class TokenizeStage:
    reads = ("id", "source", "kind", "status", "path", "stage", "reason", "detail", "lineage", "meta", "arrays")
    writes = tuple(RESULT_SCHEMA.names)

    def __init__(self, tokenizers_dir: str, roles: list[str], vocab_path: str):
        torch.set_num_threads(1)  # one core per actor: the pool, not the op, provides parallelism
        self.toks = load_tokenizers(Path(tokenizers_dir), roles)
        self.vocab = Vocab.load(Path(vocab_path))
        if torch.cuda.is_available():  # only true when Ray gave this actor a GPU
            for tok in self.toks.values():
                if hasattr(tok, "to"):
                    tok.to("cuda")

    def __call__(self, batch: pa.Table) -> pa.Table:
        rows = batch.to_pylist()
        out = []
        encoded = self._encode_media(rows)
        for i, r in enumerate(rows):
            if r["status"] != "ok":
                out.append(_reject_row(r, r["stage"], r["reason"], r["detail"]))
                continue
            try:
                out.append(self._sequence(r, encoded.get(i, {})))
            except Exception as e:  # a tokenizer failure on one item must not sink the batch
                out.append(_reject_row(r, "tokenize", "tokenizer_error", f"{type(e).__name__}: {e}"))
        return pa.Table.from_pylist(out, schema=RESULT_SCHEMA)

    # ------------------------------------------------------------------------------------
    def _encode_media(self, rows: list[dict]) -> dict[int, dict]:
        """Batch-encode media per array key across the batch: {row index: {key: (codes, side)}}."""
        jobs: dict[str, list[tuple[int, np.ndarray]]] = {}
        for i, r in enumerate(rows):
            if r["status"] == "ok" and r["arrays"]:
                for key, arr in st_load(r["arrays"]).items():
                    jobs.setdefault(key, []).append((i, arr))
        role_of = {"image": "image", "frames": "video", "audio": "audio", "sensor": "sensor"}
        result: dict[int, dict] = {}
        for key, items in jobs.items():
            tok = self.toks[role_of[key]]
            try:
                with torch.inference_mode():
                    codes = tok.encode_batch([a for _, a in items])
            except Exception:  # fall back to one at a time so a single bad item is isolated
                codes = []
                for _, a in items:
                    try:
                        with torch.inference_mode():
                            codes.append(tok.encode(a))
                    except Exception as e:
                        codes.append(e)
            for (i, _), c in zip(items, codes):
                result.setdefault(i, {})[key] = c
        return result

    def _sequence(self, r: dict, enc: dict) -> dict:
        meta = json.loads(r["meta"])
        text = self.toks["text"]
        for key, val in enc.items():
            if isinstance(val, Exception):
                raise val
        kind = r["kind"]
        if kind == "chat":
            turns = [(m["role"], np.asarray(text.encode(m["content"])[0])) for m in meta["record"]["messages"]]
            b, task = compose_chat(self.vocab, turns), "chat"
        else:
            body = meta["record"]["text"] if "record" in meta else meta.get("text")
            text_ids = np.asarray(text.encode(body)[0]) if body else None
            parts = []
            if kind == "video":
                parts.append(("video", "video", *enc["frames"]))
                if "audio" in enc:
                    parts.append(("audio", "audio", *enc["audio"]))
            elif kind in ("image", "audio", "sensor"):
                parts.append((kind, kind, *enc[kind]))
            b, task = compose_media(self.vocab, kind, parts, text_ids)
        tokens = b.tokens()
        modalities = sorted({s["modality"] for s in b.spans})
        return {
            "id": r["id"], "source": r["source"], "task": task, "modalities": modalities,
            "tokens": tokens.tolist(), "num_tokens": int(len(tokens)), "spans": b.spans, "target_spans": b.targets,
            "side": json.dumps(b.side, default=_jsonable), "lineage": json.loads(r["lineage"]),
            "meta": r["meta"], "status": "ok", "path": r["path"], "stage": "", "reason": "", "detail": "",
        }


def _reject_row(r: dict, stage: str, reason: str, detail: str) -> dict:
    return {"id": r["id"], "source": r["source"], "task": "", "modalities": [], "tokens": [], "num_tokens": 0,
            "spans": [], "target_spans": [], "side": "[]", "lineage": [], "meta": "{}",
            "status": "reject", "path": r["path"], "stage": stage, "reason": reason, "detail": detail}


def _jsonable(o):
    if isinstance(o, np.generic):
        return o.item()
    if isinstance(o, np.ndarray):
        return o.tolist()
    raise TypeError(f"not JSON-serialisable: {type(o).__name__}")
