"""A full disk is recognised however it was wrapped, and the error says which disk and how much."""
import errno
import shutil

import pytest

from dataengine import diskspace


def _wrapped_like_ray() -> Exception:
    try:
        try:
            raise OSError(errno.ENOSPC, "No space left on device", "/out/part-000001.parquet")
        except OSError as inner:
            raise RuntimeError("task failed") from inner
    except RuntimeError as outer:
        return outer


@pytest.mark.parametrize("exc", [
    OSError(errno.ENOSPC, "No space left on device"),
    OSError(errno.EDQUOT, "Disk quota exceeded"),
    shutil.Error([("a", "b", "[Errno 28] No space left on device: 'b'")]),  # copytree's list of failures
    RuntimeError("ray.exceptions.RayTaskError(OSError): OSError: [Errno 28] No space left on device"),
    _wrapped_like_ray(),
])
def test_a_full_disk_is_recognised(exc):
    assert diskspace.is_disk_full(exc)


@pytest.mark.parametrize("exc", [OSError(errno.EACCES, "Permission denied"), ValueError("28 rows"),
                                 RuntimeError("no space in the vocabulary")])
def test_other_errors_are_not_a_full_disk(exc):
    assert not diskspace.is_disk_full(exc)


def test_the_message_names_the_disk_the_step_and_what_is_needed(tmp_path):
    (tmp_path / "a").mkdir()
    (tmp_path / "a" / "f").write_bytes(b"x" * 3 * 2**20)
    written = diskspace.tree_bytes(tmp_path / "a", tmp_path / "missing")
    assert written == 3 * 2**20
    err = diskspace.disk_full(tmp_path / "not-yet" / "out", written, 5 * 2**20, "writing the shards", 4)
    text = str(err)
    assert str(tmp_path / "not-yet" / "out") in text and "while writing the shards" in text
    assert "written 3.0 MiB" in text and "about 5.0 MiB in all (about 2.0 MiB more" in text
    assert "reuses the 4 finished work items" in text
    assert "needs about" not in str(diskspace.disk_full(tmp_path, written, None, "listing the inputs", 0))
