"""Text decoding: plain documents (`.txt`, `.md`) and JSON Lines records (`.jsonl`).

Documents are strict UTF-8, NFC-normalised, with ``\\n`` line ends. A JSONL file
decodes to one entry per non-blank line: a normalised record, or a
`RejectError` for that line (so one bad line does not cost the whole file).

Records are ``{"text": str}``, ``{"messages": [{"role", "content"}, ...]}``,
or an interleaved document (MMC4 / OBELICS style: text with pictures, or sound,
in reading order)::

    {"interleaved": [{"text": "A tabby cat ..."}, {"image": "images/chelsea.jpg"},
                     {"text": "... and a cup of coffee."}, {"image": "images/coffee.jpg"}]}

Each segment holds exactly one of ``"text"`` (a non-empty string), ``"image"``
or ``"audio"`` (a path RELATIVE TO THE SOURCE ROOT, ``/``-separated, e.g.
``images/cat.jpg`` or ``shards/000.tar#KEY.jpg``; other keys of a segment, such
as ``"alt"``, are kept). A reference must be a file discovery would take as that
modality: no absolute path, ``..``, backslash, URL or hidden component, and an
image/audio extension (`check_reference`). A record holds at most
``max_interleaved_media`` image and audio segments. Reading the referenced
files (confined to the root by `source.read_input`) happens in the decode stage.

Other top-level keys are kept under ``"meta"`` (present only when non-empty),
and ``"line"`` is the record's 1-based line in the file.
"""
from __future__ import annotations

import functools
import json
import re
import sys
import unicodedata
from typing import Any

from dataengine.errors import RejectError

TEXT_EXTS = frozenset({".txt", ".md"})
JSONL_EXTS = frozenset({".jsonl"})

MAX_JSON_DEPTH = 20
ROLES = frozenset({"system", "user", "assistant"})
RECORD_KEYS = ("text", "messages", "interleaved")
DEFAULT_MAX_MEDIA = 16

_BOM = b"\xef\xbb\xbf"
_UTF16_BOMS = (b"\xff\xfe", b"\xfe\xff")
# C0 controls other than \t \n \v \f \r, plus DEL: rare in real text.
_CONTROL_RE = re.compile(r"[\x01-\x08\x0e-\x1f\x7f]")
_MAX_CONTROL_RATIO = 0.01
# UAX #15's Stream-Safe Text Format: at most 30 non-starters (combining class > 0) in a row.
# Longer runs ("Zalgo" text) make NFC reorder quadratically: 100k alternating marks cost 5 s.
MAX_NON_STARTERS = 30


@functools.cache
def _non_starter_run() -> re.Pattern:
    """A regex for a run of more than MAX_NON_STARTERS non-starters (built once, ~0.1 s)."""
    ranges, start = [], None
    for cp in range(sys.maxunicode + 2):
        inside = cp <= sys.maxunicode and unicodedata.combining(chr(cp)) != 0
        if inside and start is None:
            start = cp
        elif not inside and start is not None:
            ranges.append(f"\\U{start:08x}-\\U{cp - 1:08x}")
            start = None
    return re.compile(f"[{''.join(ranges)}]{{{MAX_NON_STARTERS + 1},}}")


def check_combining_marks(text: str) -> None:
    """Reject text with a run of combining marks longer than Unicode's stream-safe limit."""
    run = _non_starter_run().search(text)
    if run:
        raise RejectError("combining_marks", f"{run.end() - run.start()} combining marks in a row at character "
                                             f"{run.start()} (Unicode's stream-safe limit is {MAX_NON_STARTERS})")


def json_depth(value: Any) -> int:
    """Nesting depth of a parsed JSON value (a scalar is 0, ``[]`` is 1), without recursion."""
    deepest = 0
    stack: list[tuple[Any, int]] = [(value, 0)]
    while stack:
        node, depth = stack.pop()
        if isinstance(node, dict):
            node = list(node.values())
        if isinstance(node, list):
            deepest = max(deepest, depth + 1)
            stack.extend((child, depth + 1) for child in node if isinstance(child, (dict, list)))
    return deepest


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not valid JSON")


def loads_json(text: str, *, max_depth: int = MAX_JSON_DEPTH) -> Any:
    """`json.loads` that refuses nesting deeper than `max_depth` and NaN/Infinity.

    Raises `ValueError` (json.JSONDecodeError is one) for anything that is not
    acceptable JSON; callers turn it into their own reject reason.
    """
    try:
        value = json.loads(text, parse_constant=_reject_constant)
    except RecursionError:
        raise ValueError(f"JSON nesting is far deeper than {max_depth} levels") from None
    depth = json_depth(value)
    if depth > max_depth:
        raise ValueError(f"JSON nesting is {depth} levels deep (limit {max_depth})")
    return value


def _normalise(text: str) -> str:
    """NFC, ``\\r\\n``/``\\r`` -> ``\\n``, trailing whitespace of the whole text removed."""
    check_combining_marks(text)  # before NFC, which is quadratic in such a run
    text = unicodedata.normalize("NFC", text)
    return text.replace("\r\n", "\n").replace("\r", "\n").rstrip()


def decode_text(data: bytes, *, max_chars: int = 2_000_000) -> str:
    """Decode a text document.

    Strict UTF-8 with an optional BOM; NUL bytes or many control characters mean
    a binary file. Returns NFC text with ``\\n`` line ends and no trailing
    whitespace (leading whitespace and per-line spacing are kept: Markdown and
    code need them).

    Reject reasons: ``binary_text``, ``invalid_utf8``, ``empty_text``, ``too_long``,
    ``combining_marks`` (a run over MAX_NON_STARTERS).
    """
    if data.startswith(_BOM):
        data = data[len(_BOM):]
    if len(data) > 4 * max_chars:  # a UTF-8 character is at most 4 bytes
        raise RejectError("too_long", f"{len(data)} bytes is more than {max_chars} characters")
    nul = data.find(b"\x00")
    if nul >= 0:
        hint = " (it looks like UTF-16: re-encode it as UTF-8)" if data[:2] in _UTF16_BOMS else ""
        raise RejectError("binary_text", f"NUL byte at offset {nul}{hint}")
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise RejectError("invalid_utf8", f"invalid UTF-8 at byte offset {exc.start}") from None
    if text and len(_CONTROL_RE.findall(text)) > _MAX_CONTROL_RATIO * len(text):
        raise RejectError("binary_text", "too many control characters for a text document")
    text = _normalise(text)
    if not text.strip():
        raise RejectError("empty_text", "the document is empty or only whitespace")
    if len(text) > max_chars:
        raise RejectError("too_long", f"{len(text)} characters (limit {max_chars})")
    return text


def _normalise_record(obj: Any, where: str, max_media: int, segment_exts) -> dict:
    """Check one parsed JSON value and return the normalised record (or raise bad_record, ...)."""
    if not isinstance(obj, dict):
        raise RejectError("bad_record", f"{where}: a record must be a JSON object, got {type(obj).__name__}")
    present = [k for k in RECORD_KEYS if k in obj]
    if len(present) != 1:
        raise RejectError("bad_record", f"{where}: a record needs exactly one of 'text', 'messages' or "
                                        f"'interleaved', got {present or 'none'}")
    has_text, has_messages = present == ["text"], present == ["messages"]
    extra = {k: v for k, v in obj.items() if k not in (*RECORD_KEYS, "meta")}
    meta = dict(obj["meta"]) if isinstance(obj.get("meta"), dict) else {}
    if "meta" in obj and not isinstance(obj["meta"], dict):
        extra["meta"] = obj["meta"]
    meta.update(extra)

    if has_text:
        if not isinstance(obj["text"], str):
            raise RejectError("bad_record", f"{where}: 'text' must be a string")
        text = _normalise(obj["text"])
        if not text.strip():
            raise RejectError("bad_record", f"{where}: 'text' is empty")
        record: dict = {"text": text}
    elif has_messages:
        record = {"messages": _normalise_messages(obj["messages"], where)}
    else:
        record = {"interleaved": _normalise_segments(obj["interleaved"], where, max_media, segment_exts)}
    if meta:
        record["meta"] = meta
    try:  # "\ud800" escapes parse to lone surrogates, which no UTF-8 writer accepts
        json.dumps(record, ensure_ascii=False).encode("utf-8")
    except UnicodeEncodeError:
        raise RejectError("bad_record", f"{where}: a string holds an unpaired surrogate escape") from None
    return record


def _normalise_messages(messages: Any, where: str) -> list[dict]:
    """Validate a chat: system turns first, then at least one user and one assistant turn."""
    if not isinstance(messages, list) or not messages:
        raise RejectError("bad_record", f"{where}: 'messages' must be a non-empty list")
    out: list[dict] = []
    for i, msg in enumerate(messages):
        if not isinstance(msg, dict):
            raise RejectError("bad_record", f"{where}: message {i} is not an object")
        role, content = msg.get("role"), msg.get("content")
        if role not in ROLES:
            raise RejectError("bad_record", f"{where}: message {i} has role {role!r}; use one of {sorted(ROLES)}")
        if role == "system" and any(m["role"] != "system" for m in out):
            raise RejectError("bad_record", f"{where}: message {i}: system turns must come first")
        if not isinstance(content, str):
            raise RejectError("bad_record", f"{where}: message {i} content must be a string")
        content = _normalise(content)
        if not content.strip():
            raise RejectError("bad_record", f"{where}: message {i} ({role}) has empty content")
        out.append({"role": role, "content": content})
    roles = {m["role"] for m in out}
    if not {"user", "assistant"} <= roles:
        raise RejectError("bad_record", f"{where}: a chat needs at least one user and one assistant turn")
    return out


def check_reference(ref: Any, modality: str, exts) -> str:
    """A segment's media reference, checked to be a root-relative file of `modality` discovery would take.

    Raises `RejectError`: ``bad_segment`` (not a non-empty string), ``remote_reference``
    (a URL), ``unsafe_path`` (absolute, ``..``, backslash), ``hidden_file`` (a component
    starting with a dot: discovery skips those, so no stamp would cover it) or
    ``unsupported_extension`` (not one of `exts`, the modality's file suffixes). Reading it is the
    decode stage's job (`source.read_input` confines it to the root).
    """
    if not isinstance(ref, str) or not ref.strip():
        raise RejectError("bad_segment", f"the {modality!r} reference must be a non-empty path string, got {ref!r}")
    if "://" in ref or ref.startswith("data:"):
        raise RejectError("remote_reference", f"{ref[:200]!r} is a URL; download it first (e.g. img2dataset) "
                                              "and reference the local file relative to the source root")
    parts = ref.split("/")
    if ref.startswith("/") or "\\" in ref or ".." in parts or (len(ref) > 1 and ref[1] == ":"):
        raise RejectError("unsafe_path", f"{ref!r} is absolute, uses '\\' or climbs out with '..'; "
                                         "reference files by their path relative to the source root")
    if any(p.startswith(".") for p in parts if p):
        raise RejectError("hidden_file", f"{ref!r} has a hidden component; discovery skips hidden files, "
                                         "rename it without the leading dot")
    base = parts[-1].rsplit("#", 1)[-1].lower()
    ext = next((e for e in sorted(exts, key=len, reverse=True) if base.endswith(e) and len(base) > len(e)),
               "." + base.rsplit(".", 1)[-1] if "." in base else "")
    if ext not in exts:
        raise RejectError("unsupported_extension", f"{ref!r}: extension {ext or '(none)'!r} is not an "
                                                   f"{modality} type")
    return ref


def _normalise_segments(segments: Any, where: str, max_media: int, segment_exts) -> list[dict]:
    """Validate an interleaved document's segments (reasons no_segments, bad_segment, too_many_media, ...)."""
    if not isinstance(segments, list):
        raise RejectError("bad_record", f"{where}: 'interleaved' must be a list of segments, "
                                        f"got {type(segments).__name__}")
    if not segments:
        raise RejectError("no_segments", f"{where}: 'interleaved' holds no segments; give at least one "
                                         '{"text": ...} or {"image": PATH}')
    n_media = sum(isinstance(s, dict) and any(m in s for m in segment_exts) for s in segments)
    if n_media > max_media:
        raise RejectError("too_many_media", f"{where}: {n_media} image/audio segments (limit "
                                            f"decode.text.max_interleaved_media={max_media}); split the document "
                                            "or raise the limit")
    out = []
    for i, seg in enumerate(segments):
        kinds = [k for k in ("text", *segment_exts) if isinstance(seg, dict) and k in seg]
        if len(kinds) != 1:
            got = sorted(seg) if isinstance(seg, dict) else type(seg).__name__
            raise RejectError("bad_segment", f"{where}: segment {i} ({got}) is not a segment; use exactly one of "
                                             '{"text": str}, {"image": PATH} or {"audio": PATH}')
        (kind,) = kinds
        seg = dict(seg)
        if kind == "text":
            if not isinstance(seg["text"], str) or not _normalise(seg["text"]).strip():
                raise RejectError("bad_segment", f"{where}: segment {i}: 'text' must be a non-empty string")
            seg["text"] = _normalise(seg["text"])
        else:
            try:
                check_reference(seg[kind], kind, segment_exts[kind])
            except RejectError as exc:
                raise RejectError(exc.reason, f"{where}: segment {i}: {exc.detail}") from None
        out.append(seg)
    return out


def _decode_line(raw: bytes, lineno: int, max_record_bytes: int, max_media: int, segment_exts) -> dict:
    """Decode one non-blank JSONL line into a record; raise RejectError naming the line."""
    where = f"line {lineno}"
    if len(raw) > max_record_bytes:
        raise RejectError("record_too_large", f"{where}: {len(raw)} bytes (limit {max_record_bytes})")
    try:
        line = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise RejectError("invalid_utf8", f"{where}: invalid UTF-8 at byte {exc.start} of the line") from None
    try:
        obj = loads_json(line)
    except (ValueError, RecursionError) as exc:
        raise RejectError("bad_json", f"{where}: {exc}") from None
    return _normalise_record(obj, where, max_media, segment_exts)


def decode_jsonl(data: bytes, *, segment_exts, max_record_bytes: int = 1_000_000,
                 max_interleaved_media: int = DEFAULT_MAX_MEDIA) -> list[dict | RejectError]:
    """Decode a JSON Lines file into one entry per non-blank line, in file order.

    `segment_exts`: {modality: file suffixes} an interleaved segment may reference (the registry's
    `dataengine.modalities.segment_exts()`: image and audio).

    Each entry is a normalised record or the `RejectError` for that line
    (reasons ``bad_json``, ``bad_record``, ``record_too_large``, ``invalid_utf8``,
    and for interleaved records ``no_segments``, ``bad_segment``, ``too_many_media``
    and the `check_reference` reasons; the detail starts with the 1-based line number). Both carry that line
    number: ``record["line"]`` and ``error.line`` (blank lines are skipped, so
    the entry index is not the line).

    The whole file is rejected (raised) when it is ``empty_file`` (no non-blank
    line), ``binary_text`` (NUL bytes), or ``invalid_utf8`` (no line is valid UTF-8).
    """
    if data.startswith(_BOM):
        data = data[len(_BOM):]
    nul = data.find(b"\x00")
    if nul >= 0:
        raise RejectError("binary_text", f"NUL byte at offset {nul}: not a JSONL text file")
    out: list[dict | RejectError] = []
    for lineno, raw in enumerate(data.split(b"\n"), start=1):
        raw = raw.rstrip(b"\r")
        if not raw.strip():
            continue
        try:
            record = _decode_line(raw, lineno, max_record_bytes, max_interleaved_media, segment_exts)
            record["line"] = lineno
            out.append(record)
        except RejectError as exc:
            exc.line = lineno  # type: ignore[attr-defined]
            out.append(exc)
    if not out:
        raise RejectError("empty_file", "the JSONL file has no records")
    if all(isinstance(e, RejectError) and e.reason == "invalid_utf8" for e in out):
        raise RejectError("invalid_utf8", "no line of the file is valid UTF-8")
    return out
