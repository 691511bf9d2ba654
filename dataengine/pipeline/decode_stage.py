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
from dataengine import storage
from dataengine.curate.stats import content_hash, item_stats, stats_json
from dataengine.curate.stats_visual import VIDEO_ANALYSIS_SIDE
from dataengine.decode.source import check_unchanged
from dataengine.errors import RejectError
from dataengine.manifest_input import manifest_of
from dataengine.recipe import Decode, Recipe
from dataengine.tokenize.samples import image_size_of

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
    image_size: int | None        # square side of the image tokenizer (None: no image tokenizer)
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
        needed = "text" if kind in ("text", "jsonl") else kind
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
            arrays, described = self._media(kind, data, u["media"], sidecar, meta)
            if self.stats and described[1] != "{}":
                described = (described[0], stats_json({**json.loads(described[1]), "media_bytes": len(data)}))
        except RejectError as e:
            return out + self._media_failed(u, lineage[1:], e.reason, e.detail)
        except Exception as e:  # a decoder bug or an unforeseen file: reject, never crash the run
            return out + self._media_failed(u, lineage[1:], "decoder_error",
                                            f"{type(e).__name__}: {e} | {_last_frame(e)}")
        if kind == "text":  # a text document's own file is its content, not a caption
            lineage[0]["role"] = "document"
        out.append(_ok(u, u["unit_id"], "text" if kind == "text" else kind, lineage, meta, arrays, described))
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

    def _describe(self, kind: str, full: dict, text: str | None, smeta: dict, meta: dict) -> tuple[str, str]:
        """(content_hash, stats JSON) of one item from its decode before the tokenizer's resize
        (images at full resolution; video frames at the stats' and tokenizer's short side)."""
        digest = content_hash(full, text)
        if not self.stats:
            return digest, "{}"
        try:
            return digest, stats_json(item_stats(kind, full, smeta))
        except Exception as e:  # a stats bug must not lose the item: it keeps empty stats
            meta["stats_error"] = f"{type(e).__name__}: {e} | {_last_frame(e)}"
            return digest, "{}"

    def _media(self, kind: str, data: bytes, path: str, sidecar: dict | None,
               meta: dict) -> tuple[dict, tuple[str, str]]:
        """(arrays at the tokenizer's size, (content_hash, stats JSON))."""
        c = self.decode
        if kind == "text":
            meta["text"] = D.decode_text(data, max_chars=c.text.max_chars)
            return {}, self._describe("text", {}, meta["text"], {"text": meta["text"]}, meta)
        if kind == "image":
            img = D.decode_image(data, max_pixels=c.image.max_pixels)
            meta["width"], meta["height"] = int(img.shape[1]), int(img.shape[0])
            described = self._describe("image", {"image": img}, None, {}, meta)
            return {"image": D.square_resize(img, self.image_size)}, described
        if kind == "audio":
            wave, info = D.decode_audio(data, sample_rate=c.audio.sample_rate, max_seconds=c.audio.max_seconds)
            meta.update(info)
            smeta = {"sample_rate": c.audio.sample_rate, "duration_s": info.get("duration_s")}
            return {"audio": wave}, self._describe("audio", {"audio": wave}, None, smeta, meta)
        if kind == "video":
            v = D.decode_video(data, fps=c.video.fps, max_seconds=c.video.max_seconds,
                               max_frames=c.video.max_frames, max_pixels=c.video.max_pixels,
                               sample_rate=c.audio.sample_rate, backend=c.video.backend,
                               short_side=max(self.image_size, VIDEO_ANALYSIS_SIDE))  # what tokens and stats use
            meta.update({"fps": v.fps, "duration_s": v.duration_s, "truncated": v.truncated,
                         "frames": int(v.frames.shape[0]), "has_audio": v.audio is not None,
                         "width": v.width, "height": v.height})
            full = {"frames": v.frames} if v.audio is None else {"frames": v.frames, "audio": v.audio}
            described = self._describe("video", full, None, meta, meta)
            frames = np.stack([D.square_resize(f, self.image_size) for f in v.frames])
            arrays = {"frames": frames}
            if v.audio is not None and len(v.audio) and "audio" in self.modalities:
                arrays["audio"] = v.audio.astype(np.float32)
            return arrays, described
        if kind == "sensor":
            ext = Path(path).suffix.lower()
            rec = D.decode_sensor(data, ext, sidecar, rate_hz=c.sensor.rate_hz, max_rows=c.sensor.max_rows,
                                  max_nan_ratio=c.sensor.max_nan_ratio, max_label_chars=c.text.max_chars)
            meta.update({"channels": rec.channels, "rate_hz": rec.rate_hz, "sensor": rec.meta})
            if rec.label is not None and "text" not in meta:
                meta["text"] = str(rec.label)
            meta["label"] = rec.label
            values = np.ascontiguousarray(rec.values, dtype=np.float32)
            smeta = {k: rec.meta.get(k) for k in ("source_rows", "source_rate_hz", "duration_s", "filled_non_finite")}
            smeta["rate_hz"] = rec.rate_hz
            return {"sensor": values}, self._describe("sensor", {"sensor": values}, None, smeta, meta)
        raise RejectError("unsupported_kind", f"no decoder for {kind!r}")

    @staticmethod
    def _media_failed(u: dict, companions: list[dict] | None, reason: str, detail: str,
                      stage: str = "decode") -> list[dict]:
        """Reject the media file, and its caption/sidecar with it: they have no sample to join.

        `companions` are the caption/sidecar/manifest-row entries that decoded fine (None: the
        media failed before they were read, so every companion of the unit).
        """
        rows = [_reject(u, u["media"], stage, reason, detail)]
        if companions is None:
            paths = [p for p in (u.get("caption"), u.get("sidecar"), u.get("row")) if p]
        else:
            paths = [c["path"] for c in companions]
        for path in paths:
            rows.append(_reject(u, path, stage, "media_rejected",
                                f"its media file {u['media']} was rejected ({reason})"))
        return rows

    def _jsonl(self, u: dict, data: bytes, lineage0: dict) -> list[dict]:
        out = []
        records = D.decode_jsonl(data, max_record_bytes=self.decode.text.max_record_bytes,
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
        c, root = self.decode, u["root"]
        full, arrays, segments = {}, {}, []
        for k, seg in enumerate(rec["interleaved"]):
            mod = next((m for m in ("image", "audio") if m in seg), None)
            if mod is None:
                segments.append(seg)
                continue
            ref = seg[mod]
            if mod not in self.modalities or (mod == "image" and self.image_size is None):
                raise RejectError("no_tokenizer", f"segment {k} references {mod} {ref!r} and the recipe has no "
                                                  f"`tokenizers.{mod}`; add one to keep interleaved {mod}")
            try:
                raw = _read(root, ref, c.max_file_bytes, None, self.storage_options)
                if mod == "image":
                    full[f"image.{k}"] = img = D.decode_image(raw, max_pixels=c.image.max_pixels)
                    arrays[f"image.{k}"] = D.square_resize(img, self.image_size)
                    segments.append({**seg, "sha256": _sha(raw), "width": int(img.shape[1]),
                                     "height": int(img.shape[0])})
                else:
                    wave, info = D.decode_audio(raw, sample_rate=c.audio.sample_rate, max_seconds=c.audio.max_seconds)
                    full[f"audio.{k}"] = arrays[f"audio.{k}"] = wave.astype(np.float32, copy=False)
                    segments.append({**seg, "sha256": _sha(raw), "duration_s": info.get("duration_s")})
            except RejectError as e:
                reason = f"missing_{mod}" if e.reason == "vanished" else e.reason
                detail = "no such file under the source root" if e.reason == "vanished" else e.detail
                raise RejectError(reason, f"segment {k} ({mod} {ref!r}): {detail}") from None
        meta["record"] = {key: v for key, v in rec.items() if key != "interleaved"}
        meta["segments"] = segments
        meta["text"] = "\n\n".join(s["text"] for s in segments if "text" in s)
        canon = json.dumps([["text", s["text"]] if "text" in s else [next(m for m in ("image", "audio") if m in s)]
                            for s in segments], ensure_ascii=False)
        return arrays, self._describe("text", full, canon, {"text": meta["text"]}, meta)


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
    return DecodeStage(decode=recipe.decode, image_size=image_size_of(recipe), modalities=frozenset(recipe.tokenizers),
                       stats=stats)
