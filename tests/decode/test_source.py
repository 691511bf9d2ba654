"""read_input: confined, capped reads that refuse files changed since discovery."""
from __future__ import annotations

import json
import os

import pytest

from dataengine.decode import read_input
from dataengine.errors import RejectError


def _stamps(root, rel):
    st = os.stat(root / rel)
    return json.dumps({rel: [st.st_size, st.st_mtime_ns]})


def _reason(*args, **kw) -> str:
    with pytest.raises(RejectError) as info:
        read_input(*args, **kw)
    return info.value.reason


def test_reads_a_file_and_refuses_changes_since_discovery(tmp_path):
    (tmp_path / "a.txt").write_bytes(b"hello")
    stamps = _stamps(tmp_path, "a.txt")
    assert read_input(tmp_path, "a.txt", 10, stamps) == b"hello"
    with open(tmp_path / "a.txt", "ab") as f:
        f.write(b" world")
    assert _reason(tmp_path, "a.txt", 100, stamps) == "changed_since_discovery"
    assert read_input(tmp_path, "a.txt", 100) == b"hello world"  # no stamp: no check
    assert _reason(tmp_path, "a.txt", 5) == "file_too_large"
    (tmp_path / "a.txt").unlink()
    assert _reason(tmp_path, "a.txt", 100, stamps) == "vanished"
    (tmp_path / "e.txt").write_bytes(b"")
    assert _reason(tmp_path, "e.txt", 100) == "empty_file"


def test_stays_inside_the_root(tmp_path):
    root = tmp_path / "root"
    root.mkdir()
    (tmp_path / "secret.txt").write_bytes(b"secret")
    os.symlink(tmp_path / "secret.txt", root / "swapped.txt")  # a link swapped in after discovery
    assert _reason(root, "swapped.txt", 100) == "symlink_outside_root"
    assert _reason(root, "../secret.txt", 100) == "unsafe_path"
    assert _reason(root, "/etc/passwd", 100) == "unsafe_path"
    os.mkfifo(root / "pipe.wav")
    assert _reason(root, "pipe.wav", 100) == "not_a_file"  # opened without blocking, then refused
