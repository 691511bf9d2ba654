"""Decode stage: a batch of units (file groups) in, a batch of decoded items out.

A plain function over Arrow batches, run as Ray tasks. It reads: the unit
columns of `discover.Unit`. It writes `DECODED_SCHEMA`: one row per decoded
item (a unit, or one record of a `.jsonl`) and one row per rejected input. The
decoded arrays travel as a safetensors blob (no pickle), already resized to the
tokenizer's resolution so the object store never holds full-size video.
"""
from __future__ import annotations

import hashlib
import json
import traceback
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa
from safetensors.numpy import save as st_save

from dataengine import decode as D
from dataengine.errors import RejectError
from dataengine.recipe import Decode

DECODED_SCHEMA = pa.schema([
    ("id", pa.string()),
    ("unit_id", pa.string()),
    ("source", pa.string()),
    ("kind", pa.string()),      # image | audio | video | sensor | text | chat
    ("status", pa.string()),    # ok | reject
    ("path", pa.string()),      # the input this row is about (rejects: the failing one)
    ("stage", pa.string()),
    ("reason", pa.string()),
    ("detail", pa.string()),
    ("lineage", pa.string()),   # JSON [{path, sha256, role}]
    ("meta", pa.string()),      # JSON
    ("arrays", pa.binary()),    # safetensors bytes of the decoded arrays
])


@dataclass(frozen=True)
class DecodeStage:
    """Settings the decode function needs; a frozen dataclass so Ray ships it cheaply."""

    decode: Decode
    image_size: int | None        # square side of the image tokenizer (None: no image tokenizer)
    modalities: frozenset[str]    # modalities the recipe has tokenizers for
    reads: tuple[str, ...] = ("unit_id", "source", "root", "kind", "media", "caption", "sidecar")
    writes: tuple[str, ...] = tuple(DECODED_SCHEMA.names)

    def __call__(self, batch: pa.Table) -> pa.Table:
        rows: list[dict] = []
        for unit in batch.to_pylist():
            rows.extend(self.decode_unit(unit))
        return pa.Table.from_pylist(rows, schema=DECODED_SCHEMA)

    # ------------------------------------------------------------------------------------
    def decode_unit(self, u: dict) -> list[dict]:
        out: list[dict] = []
        root = Path(u["root"])
        kind = u["kind"]
        needed = "text" if kind in ("text", "jsonl") else kind
        if needed not in self.modalities:
            return self._media_failed(u, None, "no_tokenizer",
                                      f"the recipe has no `tokenizers.{needed}`; add one to keep {kind} inputs")
        try:
            data = _read(root, u["media"], self.decode.max_file_bytes)
        except RejectError as e:
            return self._media_failed(u, None, e.reason, e.detail)
        lineage = [{"path": u["media"], "sha256": hashlib.sha256(data).hexdigest(), "role": "media"}]
        meta: dict = {}
        # sidecar and caption first: their failure is theirs alone, the media still counts
        sidecar = None
        if u.get("sidecar"):
            try:
                raw = _read(root, u["sidecar"], self.decode.max_file_bytes)
                sidecar = D.parse_sidecar(raw)
                lineage.append({"path": u["sidecar"], "sha256": _sha(raw), "role": "sidecar"})
                meta["sidecar"] = sidecar
            except RejectError as e:
                out.append(_reject(u, u["sidecar"], "decode", e.reason, e.detail))
        if u.get("caption"):
            try:
                raw = _read(root, u["caption"], self.decode.max_file_bytes)
                meta["text"] = D.decode_text(raw, max_chars=self.decode.text.max_chars)
                lineage.append({"path": u["caption"], "sha256": _sha(raw), "role": "caption"})
            except RejectError as e:
                out.append(_reject(u, u["caption"], "decode", e.reason, e.detail))
        try:
            if kind == "jsonl":
                return out + self._jsonl(u, data, lineage[0])
            arrays = self._media(kind, data, u["media"], sidecar, meta)
        except RejectError as e:
            return out + self._media_failed(u, lineage[1:], e.reason, e.detail)
        except Exception as e:  # a decoder bug or an unforeseen file: reject, never crash the run
            return out + self._media_failed(u, lineage[1:], "decoder_error",
                                            f"{type(e).__name__}: {e} | {_last_frame(e)}")
        if kind == "text":  # a text document's own file is its content, not a caption
            lineage[0]["role"] = "document"
        out.append(_ok(u, u["unit_id"], "text" if kind == "text" else kind, lineage, meta, arrays))
        return out

    def _media(self, kind: str, data: bytes, path: str, sidecar: dict | None, meta: dict) -> dict:
        c = self.decode
        if kind == "text":
            meta["text"] = D.decode_text(data, max_chars=c.text.max_chars)
            return {}
        if kind == "image":
            img = D.decode_image(data, max_pixels=c.image.max_pixels)
            meta["width"], meta["height"] = int(img.shape[1]), int(img.shape[0])
            return {"image": D.square_resize(img, self.image_size)}
        if kind == "audio":
            wave, info = D.decode_audio(data, sample_rate=c.audio.sample_rate, max_seconds=c.audio.max_seconds)
            meta.update(info)
            return {"audio": wave}
        if kind == "video":
            v = D.decode_video(data, fps=c.video.fps, max_seconds=c.video.max_seconds,
                               max_frames=c.video.max_frames, max_pixels=c.video.max_pixels,
                               sample_rate=c.audio.sample_rate, backend=c.video.backend)
            meta.update({"fps": v.fps, "duration_s": v.duration_s, "truncated": v.truncated,
                         "frames": int(v.frames.shape[0]), "has_audio": v.audio is not None})
            frames = np.stack([D.square_resize(f, self.image_size) for f in v.frames])
            arrays = {"frames": frames}
            if v.audio is not None and len(v.audio) and "audio" in self.modalities:
                arrays["audio"] = v.audio.astype(np.float32)
            return arrays
        if kind == "sensor":
            ext = Path(path).suffix.lower()
            rec = D.decode_sensor(data, ext, sidecar, rate_hz=c.sensor.rate_hz, max_rows=c.sensor.max_rows,
                                  max_nan_ratio=c.sensor.max_nan_ratio)
            meta.update({"channels": rec.channels, "rate_hz": rec.rate_hz, "sensor": rec.meta})
            if rec.label is not None and "text" not in meta:
                meta["text"] = str(rec.label)
            meta["label"] = rec.label
            return {"sensor": np.ascontiguousarray(rec.values, dtype=np.float32)}
        raise RejectError("unsupported_kind", f"no decoder for {kind!r}")

    @staticmethod
    def _media_failed(u: dict, companions: list[dict] | None, reason: str, detail: str) -> list[dict]:
        """Reject the media file, and its caption/sidecar with it: they have no sample to join.

        `companions` are the caption/sidecar entries that decoded fine (None: the
        media failed before they were read, so every companion of the unit).
        """
        rows = [_reject(u, u["media"], "decode", reason, detail)]
        if companions is None:
            paths = [p for p in (u.get("caption"), u.get("sidecar")) if p]
        else:
            paths = [c["path"] for c in companions]
        for path in paths:
            rows.append(_reject(u, path, "decode", "media_rejected",
                                f"its media file {u['media']} was rejected ({reason})"))
        return rows

    def _jsonl(self, u: dict, data: bytes, lineage0: dict) -> list[dict]:
        out = []
        records = D.decode_jsonl(data, max_record_bytes=self.decode.text.max_record_bytes)
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
            kind = "chat" if "messages" in rec else "text"
            rid = hashlib.sha256(f"{u['unit_id']}#L{line}".encode()).hexdigest()[:24]
            out.append(_ok(u, rid, kind, lin, {"record": rec}, {}, path=path))
        return out


def _read(root: Path, rel: str, max_bytes: int) -> bytes:
    path = root / rel
    try:
        with open(path, "rb") as f:
            data = f.read(max_bytes + 1)
    except OSError as e:
        raise RejectError("unreadable", f"{type(e).__name__}: {e}") from None
    if len(data) > max_bytes:
        raise RejectError("file_too_large", f"more than decode.max_file_bytes={max_bytes} bytes")
    if not data:
        raise RejectError("empty_file", "the file has zero bytes")
    return data


def _sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _last_frame(e: Exception) -> str:
    tb = traceback.extract_tb(e.__traceback__)
    return f"{Path(tb[-1].filename).name}:{tb[-1].lineno}" if tb else ""


def _ok(u: dict, item_id: str, kind: str, lineage: list, meta: dict, arrays: dict, path: str | None = None) -> dict:
    return {"id": item_id, "unit_id": u["unit_id"], "source": u["source"], "kind": kind, "status": "ok",
            "path": path or u["media"], "stage": "", "reason": "", "detail": "",
            "lineage": json.dumps(lineage), "meta": json.dumps(meta, default=_json_default),
            "arrays": st_save(arrays) if arrays else b""}


def _reject(u: dict, path: str, stage: str, reason: str, detail: str) -> dict:
    return {"id": "", "unit_id": u["unit_id"], "source": u["source"], "kind": u["kind"], "status": "reject",
            "path": path, "stage": stage, "reason": reason, "detail": detail[:2000],
            "lineage": "[]", "meta": "{}", "arrays": b""}


def _json_default(o):
    if isinstance(o, np.generic):
        return o.item()
    if isinstance(o, np.ndarray):
        return o.tolist()
    return str(o)
