"""decode_text and decode_jsonl: normalisation, per-line rejects, and hostile input."""
from __future__ import annotations

import json

import pytest

from dataengine import modalities
from dataengine.decode.text import JSONL_EXTS, TEXT_EXTS, decode_jsonl, decode_text, loads_json
from dataengine.errors import RejectError


def _reason(data: bytes, **kwargs) -> RejectError:
    with pytest.raises(RejectError) as info:
        decode_text(data, **kwargs)
    return info.value


def test_exts():
    assert TEXT_EXTS == {".txt", ".md"} and JSONL_EXTS == {".jsonl"}


def test_normalisation():
    raw = "\ufeffCafe\u0301 au lait\r\nline two  \r\n\r\n   \n".encode("utf-8")
    assert decode_text(raw) == "Caf\u00e9 au lait\nline two"
    # leading indentation and Markdown line breaks inside the text are kept
    assert decode_text(b"    code\nhard  \nbreak\n") == "    code\nhard  \nbreak"


def test_real_prose_round_trips():
    import pydoc_data.topics as topics

    text = next(iter(topics.topics.values()))
    assert decode_text(text.encode("utf-8")) == text.replace("\r\n", "\n").rstrip()


def test_binary_and_invalid_utf8():
    assert _reason(b"abc\x00def").reason == "binary_text"
    utf16 = _reason("hello".encode("utf-16"))
    assert utf16.reason == "binary_text" and "UTF-16" in utf16.detail
    bad = _reason(b"hello \xff world")
    assert bad.reason == "invalid_utf8" and "6" in bad.detail  # byte offset of \xff
    assert _reason(b"\x01\x02\x03\x04 mostly control").reason == "binary_text"


def test_empty_and_too_long():
    assert _reason(b"").reason == "empty_text"
    assert _reason(b" \n\t\r\n ").reason == "empty_text"
    assert _reason(b"\xef\xbb\xbf").reason == "empty_text"
    assert _reason(b"x" * 101, max_chars=100).reason == "too_long"
    assert _reason(b"x" * 1000, max_chars=100).reason == "too_long"  # caught before decoding
    assert decode_text("é".encode() * 100, max_chars=100) == "é" * 100  # chars, not bytes


def test_jsonl_records_and_per_line_rejects():
    chat = {"messages": [{"role": "system", "content": "Be brief."},
                         {"role": "user", "content": "Hi\r\nthere"},
                         {"role": "assistant", "content": "Cafe\u0301"}],
            "source": "unit", "id": 7}
    lines = [
        json.dumps({"text": "hello"}),
        "",  # blank lines are skipped but counted
        json.dumps(chat),
        "{not json",
        json.dumps({"messages": [{"role": "user", "content": "only a question"}]}),
        json.dumps([1, 2]),
        json.dumps({"text": "   "}),
        json.dumps({"messages": [{"role": "robot", "content": "x"}, {"role": "assistant", "content": "y"}]}),
        json.dumps({"text": "a", "messages": []}),
        "\xff",  # placeholder, replaced by invalid bytes below
        json.dumps({"text": "x" * 400}),
        "[" * 30 + "]" * 30,
        '{"text": NaN}',
        '{"text": "lone \\ud800 surrogate"}',
        json.dumps({"text": "tail", "meta": {"lang": "en"}, "score": 0.5}),
    ]
    data = "\n".join(lines).encode("utf-8").replace("\xff".encode("utf-8"), b"\xff\xfe") + b"\n"
    out = decode_jsonl(segment_exts=modalities.segment_exts(), data=data, max_record_bytes=300)
    assert len(out) == len(lines) - 1
    assert out[0] == {"text": "hello", "line": 1}
    assert out[1] == {"messages": [{"role": "system", "content": "Be brief."},
                                   {"role": "user", "content": "Hi\nthere"},
                                   {"role": "assistant", "content": "Caf\u00e9"}],
                      "meta": {"source": "unit", "id": 7}, "line": 3}
    expected = [("bad_json", 4), ("bad_record", 5), ("bad_record", 6), ("bad_record", 7), ("bad_record", 8),
                ("bad_record", 9), ("invalid_utf8", 10), ("record_too_large", 11), ("bad_json", 12),
                ("bad_json", 13), ("bad_record", 14)]
    assert len(expected) == len(out) - 3
    for entry, (reason, lineno) in zip(out[2:], expected):
        assert isinstance(entry, RejectError), entry
        assert entry.reason == reason and entry.detail.startswith(f"line {lineno}:"), (entry.reason, entry.detail)
        assert entry.line == lineno
    assert out[-1] == {"text": "tail", "meta": {"lang": "en", "score": 0.5}, "line": 15}


def test_jsonl_crlf_and_bom():
    data = b"\xef\xbb\xbf" + json.dumps({"text": "a"}).encode() + b"\r\n" + json.dumps({"text": "b"}).encode()
    assert decode_jsonl(segment_exts=modalities.segment_exts(), data=data) == [{"text": "a", "line": 1}, {"text": "b", "line": 2}]


def test_jsonl_whole_file_rejects():
    with pytest.raises(RejectError) as info:
        decode_jsonl(segment_exts=modalities.segment_exts(), data=b"\xff\xfe\xfd\n\x80\x81\n")
    assert info.value.reason == "invalid_utf8"
    with pytest.raises(RejectError) as info:
        decode_jsonl(segment_exts=modalities.segment_exts(), data=b"\n \n")
    assert info.value.reason == "empty_file"
    with pytest.raises(RejectError) as info:
        decode_jsonl(segment_exts=modalities.segment_exts(), data='{"text": "x"}'.encode("utf-16"))
    assert info.value.reason == "binary_text"


def test_huge_nesting_is_rejected_not_a_crash():
    deep = ("[" * 200_000 + "]" * 200_000).encode()
    (entry,) = decode_jsonl(segment_exts=modalities.segment_exts(), data=deep, max_record_bytes=10_000_000)
    assert isinstance(entry, RejectError) and entry.reason == "bad_json" and "line 1" in entry.detail
    with pytest.raises(ValueError):
        loads_json('{"a": ' * 21 + "1" + "}" * 21)
    assert loads_json('{"a": ' * 19 + "1" + "}" * 19) is not None


def test_runs_of_combining_marks_are_refused_before_normalising():
    zalgo = ("he" + "\u0301\u0316" * 50_000 + "llo").encode()  # NFC alone takes ~5 s on this
    err = _reason(zalgo)
    assert err.reason == "combining_marks" and "at character 2" in str(err)
    # Vietnamese and Devanagari stack a few marks; 30 in a row is Unicode's stream-safe limit
    assert decode_text(("Vie\u0323\u0302t " + "a" + "\u0301" * 30).encode()).startswith("Việt")
    line = json.dumps({"text": "x" + "\u0316\u0301" * 16}).encode()
    [rec, bad] = decode_jsonl(segment_exts=modalities.segment_exts(), data=b'{"text": "fine"}\n' + line)
    assert rec["text"] == "fine" and bad.reason == "combining_marks" and bad.line == 2
