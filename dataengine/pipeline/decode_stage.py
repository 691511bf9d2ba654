"""Decode stage: a batch of units (file groups) in, a batch of decoded items out.

A plain function over Arrow batches, run as Ray tasks. It reads: the unit
columns of `discover.Unit`. It writes `DECODED_SCHEMA`: one row per decoded
item (a unit, or one record of a `.jsonl`) and one row per rejected input. A
manifest row's unit (``row`` set) takes its caption and metadata from ``inline``
instead of files, and is refused if the manifest changed since discovery. The
decoded arrays travel as a safetensors blob (no pickle), already resized to the
tokenizer's resolution so the object store never holds full-size video.

Before that resize, each item gets its `content_hash` (sha256 of the decoded
payload at full decoded resolution and rate, or of the normalised text: the same
image saved as PNG and as BMP, or under two names, hashes the same) and its
quality `stats` (JSON, keys from `dataengine.curate.stats.STAT_FIELDS`). Reject
rows have content_hash "" and stats "{}". A stats failure never rejects an item:
its stats stay "{}" and meta["stats_error"] says why.
"""
from __future__ import annotations

import hashlib
import json
import traceback
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pyarrow as pa
from safetensors.numpy import save as st_save

from dataengine import decode as D
from dataengine import modalities
from dataengine import storage
from dataengine.curate.stats import content_hash, item_stats, stats_json
from dataengine.decode.source import check_unchanged
from dataengine.errors import RejectError
from dataengine.manifest_input import manifest_of
from dataengine.recipe import Decode, Recipe
from dataengine.tokenize.samples import input_sizes

DECODED_SCHEMA = pa.schema([
    ("id", pa.string()),
    ("unit_id", pa.string()),
    ("source", pa.string()),
    ("kind", pa.string()),      # image | audio | video | sensor | text | chat | interleaved
    ("status", pa.string()),    # ok | reject
    ("path", pa.string()),      # the input this row is about (rejects: the failing one)
    ("stage", pa.string()),
    ("reason", pa.string()),
    ("detail", pa.string()),
    ("lineage", pa.string()),   # JSON [{path, sha256, role}]
    ("meta", pa.string()),      # JSON
    ("arrays", pa.binary()),    # safetensors bytes of the decoded arrays
    ("content_hash", pa.string()),  # sha256 hex of the decoded payload, before the tokenizer's resize ("" for rejects)
    ("stats", pa.string()),     # JSON object of quality stats, keys from curate.stats.STAT_FIELDS
    ("unit_rows", pa.int32()),  # rows this row's unit produced: a resumed run knows when a unit is complete
])


@dataclass(frozen=True)
class DecodeStage:
    """Settings the decode function needs; a frozen dataclass so Ray ships it cheaply."""

    decode: Decode
    sizes: dict[str, int]         # input side of each tokenizer that has one (`Modality.size_param`): image 64
    modalities: frozenset[str]    # modalities the recipe has tokenizers for
    stats: bool = True            # compute quality stats (False: stats "{}", e.g. when fitting tokenizers)
    reads: tuple[str, ...] = ("unit_id", "source", "root", "kind", "media", "caption", "sidecar", "stamps",
                              "row", "inline")
    writes: tuple[str, ...] = tuple(DECODED_SCHEMA.names)
    ledger: str | None = None     # the run's crash ledger actor (pipeline.isolation); None: no crash isolation
    # how to reach s3:// roots, captured where the stage is built (the driver) and shipped with it: a worker's
    # environment may lack the AWS variables (Ray started before they were set, another node). Repr hides keys.
    storage_options: storage.StorageOptions = field(default_factory=storage.options_from_env)

    def __call__(self, batch: pa.Table, guard=None, run_unit=None) -> pa.Table:
        """Decode a batch of units. `guard`: the work item's `UnitGuard` (opened and finished by the caller,
        `pipeline.items`); without one the batch opens its own (one round trip to the ledger). `run_unit`:
        what decodes one unit (`pipeline.budget.WatchedDecode`: in a child process, within the budgets);
        default `decode_unit`, in this process."""
        from dataengine.pipeline.isolation import UnitGuard, maybe_crash

        rows: list[dict] = []
        units = batch.to_pylist()
        own = guard is None
        guard = guard or UnitGuard(self.ledger, [u["unit_id"] for u in units])
        for unit in units:
            if guard.rejected(unit["unit_id"]):  # it killed the worker max_unit_crashes times: never again
                stage, reason = guard.reason(unit["unit_id"])
                produced = self._media_failed(unit, None, reason, guard.detail(unit), stage=stage)
            else:
                guard.started(unit["unit_id"])
                maybe_crash(unit["media"])  # fault injection (DATAENGINE_CRASH_ON); nothing when unset
                produced = (run_unit or self.decode_unit)(unit)
            for r in produced:
                r["unit_rows"] = len(produced)
            rows.extend(produced)
        if own:
            guard.finished()
        return pa.Table.from_pylist(rows, schema=DECODED_SCHEMA)

    # ------------------------------------------------------------------------------------
    def decode_unit(self, u: dict) -> list[dict]:
        out: list[dict] = []
        root = u["root"]  # a folder or a URI (s3://bucket/prefix): never through Path, which folds "//"
        kind = u["kind"]
        needed = modalities.TEXT if kind == "jsonl" else kind
        if needed not in self.modalities:
            return self._media_failed(u, None, "no_tokenizer",
                                      f"the recipe has no `tokenizers.{needed}`; add one to keep {kind} inputs")
        try:
            if u.get("row"):  # a manifest row's sample: its caption and metadata were read from the manifest
                check_unchanged(root, manifest_of(u["row"]), u.get("stamps"), self.storage_options)
            data = _read(root, u["media"], self.decode.max_file_bytes, u.get("stamps"), self.storage_options)
        except RejectError as e:
            return self._media_failed(u, None, e.reason, e.detail)
        lineage = [{"path": u["media"], "sha256": hashlib.sha256(data).hexdigest(), "role": "media"}]
        meta: dict = {}
        # sidecar and caption first: their failure is theirs alone, the media still counts
        sidecar = None
        if u.get("sidecar"):
            try:
                raw = _read(root, u["sidecar"], self.decode.max_file_bytes, u.get("stamps"), self.storage_options)
                sidecar = D.parse_sidecar(raw)
                lineage.append({"path": u["sidecar"], "sha256": _sha(raw), "role": "sidecar"})
                meta["sidecar"] = sidecar
            except RejectError as e:
                out.append(_reject(u, u["sidecar"], "decode", e.reason, e.detail))
        if u.get("caption"):
            try:
                raw = _read(root, u["caption"], self.decode.max_file_bytes, u.get("stamps"), self.storage_options)
                meta["text"] = D.decode_text(raw, max_chars=self.decode.text.max_chars)
                lineage.append({"path": u["caption"], "sha256": _sha(raw), "role": "caption"})
            except RejectError as e:
                out.append(_reject(u, u["caption"], "decode", e.reason, e.detail))
        if u.get("row"):
            sidecar = self._manifest_row(u, meta, lineage)
        try:
            if kind == "jsonl":
                return out + self._jsonl(u, data, lineage[0])
            d = self._media(kind, data, u["media"], sidecar, meta)
            aligned = self._aligned(u, meta, lineage, out)  # after the media: its failure rejects them all
            arrays = {**d.arrays, **{k: v for a in aligned.values() for k, v in a.arrays.items()}}
            described = self._describe(kind, d.full, d.text, d.stats_meta, meta, aligned)
            if self.stats and described[1] != "{}":
                described = (described[0], stats_json({**json.loads(described[1]), "media_bytes": len(data)}))
        except RejectError as e:
            return out + self._media_failed(u, lineage[1:], e.reason, e.detail)
        except Exception as e:  # a decoder bug or an unforeseen file: reject, never crash the run
            return out + self._media_failed(u, lineage[1:], "decoder_error",
                                            f"{type(e).__name__}: {e} | {_last_frame(e)}")
        if kind == modalities.TEXT:  # a text document's own file is its content, not a caption
            lineage[0]["role"] = "document"
        out.append(_ok(u, u["unit_id"], kind, lineage, meta, arrays, described))
        return out

    def _manifest_row(self, u: dict, meta: dict, lineage: list) -> dict | None:
        """A manifest row's caption (``meta["text"]``, as a caption file's) and metadata (the sidecar).

        The row is in the lineage (role "manifest", sha256 of its `inline` JSON). A caption that does
        not decode leaves the sample without text and says why in ``meta["caption_error"]``."""
        raw = u.get("inline") or "{}"
        inline = json.loads(raw)
        lineage.append({"path": u["row"], "sha256": _sha(raw.encode()), "role": "manifest"})
        if inline.get("caption") is not None:
            try:
                meta["text"] = D.decode_text(inline["caption"].encode(), max_chars=self.decode.text.max_chars)
            except RejectError as e:
                meta["caption_error"] = f"{e.reason}: {e.detail}"
        if inline.get("metadata") is not None:
            meta["sidecar"] = inline["metadata"]
        return inline.get("metadata")

    def _describe(self, kind: str, full: dict, text: str | None, smeta: dict, meta: dict,
                  aligned: dict | None = None) -> tuple[str, str]:
        """(content_hash, stats JSON) of one item from its decode before the tokenizer's resize
        (images at full resolution; video frames at the stats' and tokenizer's short side). `aligned`:
        {modality: Decoded} of its aligned files, in the hash and the stats too."""
        aligned = aligned or {}
        digest = content_hash({**full, **{k: v for d in aligned.values() for k, v in d.full.items()}}, text)
        if not self.stats:
            return digest, "{}"
        try:
            stats = item_stats(kind, full, smeta)
            for mod, d in aligned.items():
                stats.update(item_stats(mod, d.full, d.stats_meta))
            return digest, stats_json(stats)
        except Exception as e:  # a stats bug must not lose the item: it keeps empty stats
            meta["stats_error"] = f"{type(e).__name__}: {e} | {_last_frame(e)}"
            return digest, "{}"

    @property
    def context(self) -> modalities.DecodeContext:
        return modalities.DecodeContext(self.decode, dict(self.sizes), self.modalities)

    def _media(self, kind: str, data: bytes, path: str, sidecar: dict | None, meta: dict) -> modalities.Decoded:
        """The media file decoded by its kind's modality (arrays at the tokenizer's size, full ones)."""
        m = modalities.registry().get(kind)
        if m is None or m.decode is None:
            raise RejectError("unsupported_kind", f"no decoder for {kind!r}")
        return m.decode(data, path, sidecar, meta, self.context)

    def _aligned(self, u: dict, meta: dict, lineage: list, out: list) -> dict:
        """{modality: Decoded} of the unit's aligned files (an image's depth map). One that fails, or whose
        modality the recipe does not tokenize, is a reject row of its own; the sample keeps its media."""
        found: dict = {}
        for mod, rel in json.loads(u.get("aligned") or "{}").items():
            if mod not in self.modalities:
                out.append(_reject(u, rel, "decode", "no_tokenizer", f"the recipe has no `tokenizers.{mod}`; add "
                                                                      f"one to keep the {mod} aligned with {u['media']}"))
                continue
            try:
                raw = _read(u["root"], rel, self.decode.max_file_bytes, u.get("stamps"), self.storage_options)
                seen: dict = {}
                found[mod] = modalities.get(mod).decode(raw, rel, None, seen, self.context)
            except RejectError as e:
                out.append(_reject(u, rel, "decode", e.reason, e.detail))
                continue
            except Exception as e:  # a decoder bug costs the aligned file, not the sample
                out.append(_reject(u, rel, "decode", "decoder_error", f"{type(e).__name__}: {e} | {_last_frame(e)}"))
                continue
            lineage.append({"path": rel, "sha256": _sha(raw), "role": mod})
            meta.setdefault("aligned", {})[mod] = seen
        return found

    @staticmethod
    def _media_failed(u: dict, companions: list[dict] | None, reason: str, detail: str,
                      stage: str = "decode") -> list[dict]:
        """Reject the media file, and its caption/sidecar with it: they have no sample to join.

        `companions` are the caption/sidecar/manifest-row entries that decoded fine (None: the
        media failed before they were read, so every companion of the unit).
        """
        rows = [_reject(u, u["media"], stage, reason, detail)]
        aligned = list(json.loads(u.get("aligned") or "{}").values())  # read only after the media decoded
        if companions is None:
            paths = [p for p in (u.get("caption"), u.get("sidecar"), u.get("row")) if p] + aligned
        else:
            paths = [c["path"] for c in companions] + aligned
        for path in paths:
            rows.append(_reject(u, path, stage, "media_rejected",
                                f"its media file {u['media']} was rejected ({reason})"))
        return rows

    def _jsonl(self, u: dict, data: bytes, lineage0: dict) -> list[dict]:
        out = []
        records = D.decode_jsonl(data, segment_exts=modalities.segment_exts(),
                                 max_record_bytes=self.decode.text.max_record_bytes,
                                 max_interleaved_media=self.decode.text.max_interleaved_media)
        if not records:
            return [_reject(u, u["media"], "decode", "empty_file", "the .jsonl file holds no records")]
        line = 0
        for rec in records:
            line = rec.get("line", line + 1) if isinstance(rec, dict) else getattr(rec, "line", line + 1)
            path = f"{u['media']}#L{line}"
            if isinstance(rec, RejectError):
                out.append(_reject(u, path, "decode", rec.reason, rec.detail))
                continue
            lin = [{"path": path, "sha256": lineage0["sha256"], "role": "record"}]
            kind = "chat" if "messages" in rec else "interleaved" if "interleaved" in rec else "text"
            rid = hashlib.sha256(f"{u['unit_id']}#L{line}".encode()).hexdigest()[:24]
            meta = {"record": rec}
            if kind == "interleaved":  # its images/audio are read here; one bad reference rejects the record
                try:
                    arrays, described = self._interleaved(u, rec, meta)
                except RejectError as e:
                    out.append(_reject(u, path, "decode", e.reason, f"line {line}: {e.detail}"))
                    continue
                except Exception as e:  # a decoder bug costs this record, not the file
                    out.append(_reject(u, path, "decode", "decoder_error", f"line {line}: {type(e).__name__}: "
                                                                            f"{e} | {_last_frame(e)}"))
                    continue
                out.append(_ok(u, rid, kind, lin, meta, arrays, described, path=path))
                continue
            if kind == "chat":  # canonical JSON of the turns: the same conversation hashes the same
                text = json.dumps([[m["role"], m["content"]] for m in rec["messages"]], ensure_ascii=False)
                described = self._describe("chat", {}, text, {"messages": rec["messages"]}, meta)
            else:
                described = self._describe("text", {}, rec["text"], {"text": rec["text"]}, meta)
            out.append(_ok(u, rid, kind, lin, meta, {}, described, path=path))
        return out

    def _interleaved(self, u: dict, rec: dict, meta: dict) -> tuple[dict, tuple[str, str]]:
        """Decode an interleaved record's referenced media: (arrays at the tokenizer's size, (hash, stats)).

        Array ``"image.K"`` / ``"audio.K"`` is segment K. `meta` gets ``segments``
        (the record's, each media one with its file's sha256) and ``text`` (the text
        segments joined by blank lines, measured by the text stats); the record in
        meta keeps its other keys. content_hash covers the segment order, the texts
        and the FULL-resolution decoded media. Referenced files are read confined to
        the source root (`read_input`) without a discovery stamp: each is its own
        unit too, whose stamp the candidates cache key holds.
        """
        c, root, ctx = self.decode, u["root"], self.context
        kinds = [m for m in modalities.media() if m.interleavable]
        full, arrays, segments = {}, {}, []
        for k, seg in enumerate(rec["interleaved"]):
            m = next((m for m in kinds if m.name in seg), None)
            if m is None:
                segments.append(seg)
                continue
            mod, ref = m.name, seg[m.name]
            if mod not in self.modalities or (m.size_param and mod not in self.sizes):
                raise RejectError("no_tokenizer", f"segment {k} references {mod} {ref!r} and the recipe has no "
                                                  f"`tokenizers.{mod}`; add one to keep interleaved {mod}")
            try:
                raw = _read(root, ref, c.max_file_bytes, None, self.storage_options)
                seen: dict = {}
                d = m.decode(raw, ref, None, seen, ctx)
                full[f"{m.array}.{k}"], arrays[f"{m.array}.{k}"] = d.full[m.array], d.arrays[m.array]
                segments.append({**seg, "sha256": _sha(raw),
                                 **{key: seen[key] for key in SEGMENT_META if key in seen}})
            except RejectError as e:
                reason = f"missing_{mod}" if e.reason == "vanished" else e.reason
                detail = "no such file under the source root" if e.reason == "vanished" else e.detail
                raise RejectError(reason, f"segment {k} ({mod} {ref!r}): {detail}") from None
        meta["record"] = {key: v for key, v in rec.items() if key != "interleaved"}
        meta["segments"] = segments
        meta["text"] = "\n\n".join(s["text"] for s in segments if "text" in s)
        canon = json.dumps([["text", s["text"]] if "text" in s else [next(m.name for m in kinds if m.name in s)]
                            for s in segments], ensure_ascii=False)
        return arrays, self._describe("text", full, canon, {"text": meta["text"]}, meta)


SEGMENT_META = ("width", "height", "duration_s")  # what an interleaved media segment records of its decode


def _read(root: str, rel: str, max_bytes: int, stamps: str | None = None,
          options: storage.StorageOptions | None = None) -> bytes:
    """A file's (or `a.tar#member`'s) bytes, confined to the root, capped, and refused if changed since discovery."""
    return D.read_input(root, rel, max_bytes, stamps, options)


def _sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _last_frame(e: Exception) -> str:
    tb = traceback.extract_tb(e.__traceback__)
    return f"{Path(tb[-1].filename).name}:{tb[-1].lineno}" if tb else ""


def _ok(u: dict, item_id: str, kind: str, lineage: list, meta: dict, arrays: dict,
        described: tuple[str, str], path: str | None = None) -> dict:
    return {"id": item_id, "unit_id": u["unit_id"], "source": u["source"], "kind": kind, "status": "ok",
            "path": path or u["media"], "stage": "", "reason": "", "detail": "",
            "lineage": json.dumps(lineage), "meta": json.dumps(meta, default=_json_default),
            "arrays": st_save(arrays) if arrays else b"", "content_hash": described[0], "stats": described[1]}


def _reject(u: dict, path: str, stage: str, reason: str, detail: str) -> dict:
    return {"id": "", "unit_id": u["unit_id"], "source": u["source"], "kind": u["kind"], "status": "reject",
            "path": path, "stage": stage, "reason": reason, "detail": detail[:2000],
            "lineage": "[]", "meta": "{}", "arrays": b"", "content_hash": "", "stats": "{}"}


def _json_default(o):
    if isinstance(o, np.generic):
        return o.item()
    if isinstance(o, np.ndarray):
        return o.tolist()
    return str(o)


def decode_stage_for(recipe: Recipe, *, stats: bool = True) -> DecodeStage:
    """The decode stage the recipe implies; `stats=False` skips quality stats (fitting needs none)."""
    return DecodeStage(decode=recipe.decode, sizes=input_sizes(recipe), modalities=frozenset(recipe.tokenizers),
                       stats=stats)
