"""Tokenize + compose stage: decoded items in, shared-vocabulary sequences out.

A callable class (it holds the tokenizer models), so Ray runs it as an actor
pool; the pool asks for a GPU only when the cluster has one, and the models move
to whatever device Ray assigned. It reads `DECODED_SCHEMA` and writes
`RESULT_SCHEMA`: the sequence columns of `SEQUENCE_SCHEMA` (less the ones
curation fills later, with `stats` as JSON) plus the reject columns, with
`status` telling which half is filled. Rejected items pass through untouched, so
every input reaches the writer.

Each item becomes ONE sequence, of the task drawn for its id (`compose.tasks`):
see `dataengine.compose.tasks`. An interleaved document (kind "interleaved")
becomes one sequence of its segments in order (`compose.sequence.compose_interleaved`):
text segments through the text tokenizer, arrays ``image.K`` / ``audio.K`` (segment
K) through the image / audio tokenizer, batched with the other items' media.
`meta.compose` records the task and the instruction template. `stats` is the decoded row's stats merged with the
tokenizer-derived ones (`curate.stats.token_stats`); with `token_recon` the
codes are decoded again to measure the reconstruction error (`recon_mse`).
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pyarrow as pa
import torch
from safetensors.numpy import load as st_load

from dataengine import modalities
from dataengine.compose.instruct import compose_task
from dataengine.compose.sequence import compose_chat, compose_interleaved
from dataengine.compose.tasks import ComposeConfig, choose_tasks, choose_template
from dataengine.curate.stats import token_stats
from dataengine.jsonable import numpy_default
from dataengine.shards.schema import REJECT_SCHEMA, SEQUENCE_SCHEMA
from dataengine.tokenize.registry import load_tokenizer
from dataengine.vocab import Vocab

RESULT_SCHEMA = pa.schema(
    [f for f in SEQUENCE_SCHEMA if f.name not in ("split", "stats", "dup_cluster", "repeat")]
    + [pa.field("stats", pa.string()), pa.field("status", pa.string())]
    + [f for f in REJECT_SCHEMA if f.name not in ("source",)]
    + [pa.field("unit_id", pa.string()), pa.field("unit_rows", pa.int32())]  # for resuming a killed run
)
SEGMENT_SEP = "."  # interleaved arrays are "<key>.<segment index>": "image.3" is segment 3, an image
TEXT = modalities.TEXT


def role_of(key: str) -> str | None:
    """The tokenizer role of a decoded array key ("frames" -> video, "image.3" -> image)."""
    m = modalities.by_array(key)
    return m.name if m else None


def load_tokenizers(tokenizers_dir: Path, roles: list[str]) -> dict:
    """Load every role's fitted tokenizer; one built on others (video on image) gets them as resources,
    ``<role>_tokenizer=``, so they load first."""
    toks: dict = {}
    pending = [r for r in modalities.names() if r in roles] + [r for r in roles if r not in modalities.names()]
    while pending:
        role = next((r for r in pending if all(n in toks for n in _needs(r) if n in roles)), pending[0])
        extra = {f"{n}_tokenizer": toks[n] for n in _needs(role) if n in toks}
        toks[role] = load_tokenizer(Path(tokenizers_dir) / role, **extra)
        pending.remove(role)
    return toks


def _needs(role: str) -> tuple[str, ...]:
    return modalities.registry()[role].needs if role in modalities.registry() else ()


class TokenizeStage:
    reads = ("id", "source", "kind", "status", "path", "stage", "reason", "detail", "lineage", "meta", "arrays",
             "content_hash", "stats")
    writes = tuple(RESULT_SCHEMA.names)

    def __init__(self, tokenizers_dir: str, roles: list[str], vocab_path: str, compose: dict | None = None,
                 seed: int = 0, token_recon: bool = False):
        torch.set_num_threads(1)  # one core per actor: the pool, not the op, provides parallelism
        self.toks = load_tokenizers(Path(tokenizers_dir), roles)
        self.vocab = Vocab.load(Path(vocab_path))
        self.compose = ComposeConfig.from_dict(compose)
        self.seed = int(seed)
        self.token_recon = bool(token_recon)
        self._prompts: dict[str, np.ndarray] = {}  # template -> encoded ids
        if torch.cuda.is_available():  # only true when Ray gave this actor a GPU
            for tok in self.toks.values():
                if hasattr(tok, "to"):
                    tok.to("cuda")

    def __call__(self, batch: pa.Table) -> pa.Table:
        rows = batch.to_pylist()
        out = []
        arrays = {i: st_load(r["arrays"]) for i, r in enumerate(rows) if r["status"] == "ok" and r["arrays"]}
        encoded = self._encode_media(arrays)
        recon = self._recon(arrays, encoded, [r["kind"] for r in rows]) if self.token_recon else {}
        for i, r in enumerate(rows):
            if r["status"] != "ok":
                made = [_reject_row(r, r["stage"], r["reason"], r["detail"])]
            else:
                try:
                    made = [self._sequence(r, encoded.get(i, {}), recon.get(i))]
                except Exception as e:  # a tokenizer failure on one item must not sink the batch
                    made = _failed(r, f"{type(e).__name__}: {e}")
            for o in made:
                o["unit_id"], o["unit_rows"] = r.get("unit_id", ""), r.get("unit_rows", 1)
            out.extend(made)
        return pa.Table.from_pylist(out, schema=RESULT_SCHEMA)

    # ------------------------------------------------------------------------------------
    def _encode_media(self, arrays: dict[int, dict]) -> dict[int, dict]:
        """Batch-encode media per array key across the batch: {row index: {key: (codes, side) | Exception}}."""
        jobs: dict[str, list[tuple[int, str, np.ndarray]]] = {}
        for i, arrs in arrays.items():
            for key, arr in arrs.items():  # "image.3" (an interleaved segment) batches with "image"
                jobs.setdefault(key.split(SEGMENT_SEP, 1)[0], []).append((i, key, arr))
        result: dict[int, dict] = {}
        for base, items in jobs.items():
            if role_of(base) not in self.toks:
                for i, key, _ in items:
                    result.setdefault(i, {})[key] = KeyError(f"no tokenizer for array {key!r}")
                continue
            tok = self.toks[role_of(base)]
            try:
                with torch.inference_mode():
                    codes = tok.encode_batch([a for _, _, a in items])
            except Exception:  # fall back to one at a time so a single bad item is isolated
                codes = []
                for _, _, a in items:
                    try:
                        with torch.inference_mode():
                            codes.append(tok.encode(a))
                    except Exception as e:
                        codes.append(e)
            for (i, key, _), c in zip(items, codes):
                result.setdefault(i, {})[key] = c
        return result

    def _recon(self, arrays: dict[int, dict], encoded: dict[int, dict], kinds: list[str]
               ) -> dict[int, float | None]:
        """Reconstruction MSE of each item's own array (its kind's), decoded in one batch per array key.

        Each modality's `recon_mse` hook gives its unit (so one threshold fits a modality; image and
        video: pixels in [0, 1]; audio: log-mel MSE; sensor: MSE over each channel's variance).
        """
        jobs: dict[str, list[int]] = {}
        for i, enc in encoded.items():
            m = modalities.for_kind(kinds[i])  # a video's own audio track, an image's depth: not measured
            key = m.array
            if key is None or m.recon_mse is None or not isinstance(enc.get(key), (tuple, list)):
                continue  # text, chat and interleaved segments are not measured
            jobs.setdefault(key, []).append(i)
        out: dict[int, float | None] = {}
        for key, idx in jobs.items():
            tok = self.toks[role_of(key)]
            try:
                with torch.inference_mode():
                    decoded = tok.decode_batch([encoded[i][key] for i in idx])
            except Exception:  # a metric that cannot be computed is missing, not a reject
                decoded = [None] * len(idx)
            for i, rec in zip(idx, decoded):
                try:
                    out[i] = None if rec is None else recon_mse(key, arrays[i][key], rec, tok)
                except Exception:
                    out[i] = None
        return out

    def _prompt(self, template: str) -> np.ndarray:
        if template not in self._prompts:
            self._prompts[template] = np.asarray(self.toks[TEXT].encode(template)[0])
        return self._prompts[template]

    def _interleaved(self, meta: dict, enc: dict) -> tuple:
        """(builder, task, codes for the token stats, their codebook size) of an interleaved document.

        Segment k is span k: text through the text tokenizer, media from ``enc["image.k"]``
        (its side also records ``segment``). The token stats are the text's, like a text document's.
        """
        text, parts, text_ids = self.toks[TEXT], [], []
        for k, seg in enumerate(meta["segments"]):
            if "text" in seg:
                ids = np.asarray(text.encode(seg["text"])[0])
                parts.append((TEXT, TEXT, ids, {}))
                text_ids.append(ids)
                continue
            mod = next(m.name for m in modalities.media() if m.interleavable and m.name in seg)
            codes, side = enc[f"{modalities.get(mod).array}{SEGMENT_SEP}{k}"]
            parts.append((mod, mod, codes, {**side, "segment": k}))
        codes = np.concatenate(text_ids) if text_ids else np.zeros(0, np.int32)
        return compose_interleaved(self.vocab, parts), "interleaved", codes, text.vocab_size

    def _sequence(self, r: dict, enc: dict, recon: float | None) -> dict:
        meta = json.loads(r["meta"])
        text = self.toks[TEXT]
        for key, val in enc.items():
            if isinstance(val, Exception):
                raise val
        kind = r["kind"]
        mod = modalities.for_kind(kind)
        template = None
        if kind == "interleaved":
            b, task, codes, size = self._interleaved(meta, enc)
        elif kind == "chat":
            turns = [(m["role"], np.asarray(text.encode(m["content"])[0])) for m in meta["record"]["messages"]]
            b, task = compose_chat(self.vocab, turns), "chat"
            codes, size = (np.concatenate([t for _, t in turns]) if turns else np.zeros(0, np.int32)), text.vocab_size
        else:
            body = meta["record"]["text"] if "record" in meta else meta.get("text")
            text_ids = np.asarray(text.encode(body)[0]) if body else None
            parts, aligned = _parts(kind, mod, enc)
            has = set(aligned) | ({"text"} if text_ids is not None and len(text_ids) > 0 else set())
            (choice,) = choose_tasks(self.compose, kind, [r["id"]], self.seed, [has])
            prompt = None
            if choice == "instruct":
                template = choose_template(self.compose, kind, r["id"], self.seed)
                prompt = self._prompt(template)
            b, task = compose_task(self.vocab, kind, choice, parts, text_ids, prompt, aligned)
            if mod.array:
                codes, size = enc[mod.array][0], self.toks[mod.name].vocab_size
            else:
                codes, size = (text_ids if text_ids is not None else np.zeros(0, np.int32)), text.vocab_size
        meta["compose"] = {"task": task, "template": template}
        stats = {**json.loads(r.get("stats") or "{}"),
                 **token_stats(np.asarray(codes), int(size), recon if mod.array else None)}
        tokens = b.tokens()
        return {
            "id": r["id"], "source": r["source"], "task": task, "kind": kind,
            "modalities": sorted({s["modality"] for s in b.spans}),
            "tokens": tokens.tolist(), "num_tokens": int(len(tokens)), "spans": b.spans, "target_spans": b.targets,
            "side": json.dumps(b.side, default=numpy_default), "lineage": json.loads(r["lineage"]),
            "meta": json.dumps(meta, default=numpy_default), "content_hash": r.get("content_hash") or "",
            "stats": json.dumps(stats, sort_keys=True, default=numpy_default),
            "status": "ok", "path": r["path"], "stage": "", "reason": "", "detail": "",
        }


def _parts(kind: str, mod, enc: dict) -> tuple[list, dict]:
    """The item's own spans (its array, then what its span carries: a video's soundtrack) and its aligned
    modalities' spans ({"depth": [...]}), each (modality, tokenizer, local codes, side)."""
    parts = [(mod.name, mod.name, *enc[mod.array])] if mod.array else []
    aligned: dict[str, list] = {}
    for m in modalities.media():
        if m.array in enc and m is not mod:
            if kind in m.carried_by:
                parts.append((m.name, m.name, *enc[m.array]))
            elif kind in m.aligns_with:
                aligned[m.name] = [(m.name, m.name, *enc[m.array])]
    return parts, aligned


def recon_mse(key: str, original: np.ndarray, decoded: np.ndarray, tok) -> float:
    """Reconstruction error of one array, in its modality's unit (`Modality.recon_mse`)."""
    m = modalities.by_array(key)
    if m is None or m.recon_mse is None:
        raise ValueError(f"no reconstruction metric for array {key!r}")
    return m.recon_mse(original, decoded, tok)


def _failed(r: dict, detail: str) -> list[dict]:
    """A decoded item the tokenizer failed on: a reject for it, and one for each caption, sidecar or
    manifest row or aligned file it carried (they have no sample left; a record's referenced media are units of
    their own)."""
    rows = [_reject_row(r, "tokenize", "tokenizer_error", detail)]
    for lin in json.loads(r["lineage"] or "[]"):
        if lin.get("role") not in ("media", "document", "record") and lin["path"] != r["path"]:
            rows.append(_reject_row({**r, "id": "", "path": lin["path"]}, "tokenize", "media_rejected",
                                    f"its media file {r['path']} was rejected (tokenizer_error)"))
    return rows


def _reject_row(r: dict, stage: str, reason: str, detail: str) -> dict:
    return {"id": r["id"], "source": r["source"], "task": "", "kind": r.get("kind") or "", "modalities": [],
            "tokens": [], "num_tokens": 0, "spans": [], "target_spans": [], "side": "[]", "lineage": [],
            "meta": "{}", "content_hash": r.get("content_hash") or "", "stats": r.get("stats") or "{}",
            "status": "reject", "path": r["path"], "stage": stage, "reason": reason, "detail": detail}
