"""The bounded tar header reader: the members `tarfile` lists on well-formed archives, and a
`TarError` (never a loop or a quadratic parse) on headers that break a bound."""
from __future__ import annotations

import io
import tarfile

import pytest
from corpus_factory import raw_tar_header

from dataengine.decode.tarlist import MAX_META_BYTES, TarError, TarReader


def _tar(fmt, members) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=fmt) as tf:
        for name, kw, data in members:
            info = tarfile.TarInfo(name)
            for k, v in kw.items():
                setattr(info, k, v)
            info.size = len(data) if data is not None else 0
            tf.addfile(info, io.BytesIO(data) if data else None)
    return buf.getvalue()


MEMBERS = [
    ("a.jpg", {}, b"x" * 700),
    ("empty.txt", {}, b""),
    ("dir", {"type": tarfile.DIRTYPE}, None),
    ("d" * 120 + "/" + "long" * 20 + ".png", {}, b"y" * 513),  # past 100 bytes: ustar prefix, GNU L, or pax path
    ("caf\u00e9/\u732b.txt", {}, b"unicode names"),
    ("link.png", {"type": tarfile.SYMTYPE, "linkname": "/etc/passwd"}, None),
    ("hard.png", {"type": tarfile.LNKTYPE, "linkname": "a.jpg"}, None),
    ("dev.wav", {"type": tarfile.CHRTYPE, "devmajor": 1, "devminor": 5}, None),
    ("fifo.wav", {"type": tarfile.FIFOTYPE}, None),
]


def _theirs(raw: bytes):
    with tarfile.open(fileobj=io.BytesIO(raw), mode="r:") as tf:
        return [(i.name, i.size, i.offset_data, i.isreg(), i.isdir(), i.issym(), i.islnk(), i.linkname)
                for i in tf], tf.offset


def _ours(raw: bytes):
    tf = TarReader(io.BytesIO(raw))
    got = [(i.name, i.size, i.offset_data, i.isreg(), i.isdir(), i.issym(), i.islnk(), i.linkname)
           for i in iter(tf.next, None)]
    return got, tf.offset


@pytest.mark.parametrize("fmt", [tarfile.USTAR_FORMAT, tarfile.GNU_FORMAT, tarfile.PAX_FORMAT])
def test_same_members_as_tarfile(fmt):
    members = MEMBERS
    raw = _tar(fmt, members)
    ours, theirs = _ours(raw), _theirs(raw)
    assert ours == theirs
    assert len(ours[0]) == len(members)


def test_a_pax_number_of_a_quarter_million_digits_is_refused():
    record = b"9" * 250_000 + b" path=x\n"
    pax = raw_tar_header(b"././@PaxHeader", b"%011o\0" % len(record), b"x", record)
    raw = bytes(pax + raw_tar_header(b"a.txt", b"%011o\0" % 0, b"0") + b"\0" * 1024)
    with pytest.raises(TarError, match="length of at most"):
        TarReader(io.BytesIO(raw))
    with pytest.raises(TarError, match="length of at most"):
        r = TarReader(io.BytesIO(raw_tar_header(b"ok.txt", b"%011o\0" % 0, b"0") + raw))
        list(iter(r.next, None))  # the same header after a good member: a bound, not the end of the archive


def test_a_negative_size_cannot_move_backwards():
    neg = b"\xff" * 12  # base-256 minus one
    raw = bytes(raw_tar_header(b"ok.txt", b"%011o\0" % 0, b"0") + raw_tar_header(b"loop.txt", neg, b"0") + b"\0" * 1024)
    r = TarReader(io.BytesIO(raw))
    assert r.next().name == "ok.txt"
    with pytest.raises(TarError, match="negative"):
        r.next()


def test_meta_records_are_capped_before_they_are_read():
    raw = bytes(raw_tar_header(b"././@LongLink", b"%011o\0" % (MAX_META_BYTES + 1), b"L") + b"\0" * 2048)
    with pytest.raises(TarError, match="cap"):
        TarReader(io.BytesIO(raw))


def test_a_pax_record_that_lies_about_its_length():
    record = b"50 path=x\n"  # claims 50 bytes, holds 10
    raw = bytes(raw_tar_header(b"p", b"%011o\0" % len(record), b"x", record)
                + raw_tar_header(b"a.txt", b"%011o\0" % 0, b"0") + b"\0" * 1024)
    with pytest.raises(TarError, match="claims 50 bytes"):
        TarReader(io.BytesIO(raw))


def test_start_of_file_errors_and_a_damaged_later_header():
    with pytest.raises(TarError) as e:
        TarReader(io.BytesIO(b""))
    assert e.value.empty
    good = _tar(tarfile.GNU_FORMAT, MEMBERS[:2])
    with pytest.raises(TarError) as e:
        TarReader(io.BytesIO(good[:300]))
    assert e.value.truncated
    with pytest.raises(TarError, match="checksum"):
        TarReader(io.BytesIO(b"\x01" * 3000))
    # a damaged header after good members ends the listing there (the caller checks what follows)
    second = 512 + 1024  # the first member's header and its 700 bytes, padded
    raw = good[:second] + b"\x07" * 512 + good[second + 512:]
    r = TarReader(io.BytesIO(raw))
    assert [m.name for m in iter(r.next, None)] == ["a.jpg"] and r.offset == second
