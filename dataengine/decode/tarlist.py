"""A bounded reader of tar headers: lists a raw shard without trusting anything it claims.

Python's `tarfile` believes a header's numbers: a pax record holding a 250,000-digit
number is parsed in quadratic time, and some crafted headers make its listing loop for
ever while memory grows. Discovery and `read_input` list shards with this reader instead.
It reads one 512-byte header at a time and bounds everything a header can ask for:

- the offset of the next header always moves forward (never by a negative size);
- a pax (``x``/``g``) or GNU long-name (``L``/``K``) record is read only up to
  `MAX_META_BYTES`, and each number in it up to `MAX_DIGITS` digits;
- a numeric field is octal or base-256, never negative, below 2**63;
- the header checksum must match.

What it yields (`Member`) has the fields `decode.source.check_member` reads, so the
member checks are the same as before. As `tarfile` does, a damaged header at the start
is an error (`TarError`, raised by `TarReader`) and a damaged header later ends the
listing at that offset (`TarReader.offset`), where the caller finds data that is not the
end-of-archive zeros; a header that breaks a bound later raises `TarError` with the reason.
"""
from __future__ import annotations

from dataclasses import dataclass

BLOCK = 512
MAX_META_BYTES = 1 << 20   # a pax record or GNU long name past 1 MiB names nothing a file system can hold
MAX_DIGITS = 20            # 2**63 has 19 digits: a longer number is an attack, not a size
_KINDS = {b"0": "file", b"\0": "file", b"7": "file", b"1": "hardlink", b"2": "symlink", b"5": "dir"}


class TarError(ValueError):
    """A header that is not a tar header, or one that breaks a bound; `truncated`: it ends inside a header."""

    def __init__(self, message: str, truncated: bool = False, empty: bool = False):
        super().__init__(message)
        self.truncated, self.empty = truncated, empty


@dataclass(frozen=True)
class Member:
    name: str
    size: int
    offset: int          # where its header starts
    offset_data: int     # where its bytes start
    kind: str            # file | dir | symlink | hardlink | special
    linkname: str = ""

    def isreg(self) -> bool:
        return self.kind == "file"

    def isdir(self) -> bool:
        return self.kind == "dir"

    def issym(self) -> bool:
        return self.kind == "symlink"

    def islnk(self) -> bool:
        return self.kind == "hardlink"


def _number(field: bytes) -> int:
    if field[:1] in (b"\x80", b"\xff"):  # base-256 (GNU): 0xff marks a negative number
        if field[0] == 0xFF:
            raise TarError("a negative number in a header field")
        value = int.from_bytes(field[1:], "big")
    else:
        digits = field.split(b"\0", 1)[0].strip(b" ")
        if not digits:
            return 0
        try:
            value = int(digits, 8)
        except ValueError:
            raise TarError(f"a header number is not octal: {digits[:24]!r}") from None
    if value >= 1 << 63:
        raise TarError("a header number at or above 2**63")
    return value


def _text(field: bytes) -> str:
    return field.split(b"\0", 1)[0].decode("utf-8", "surrogateescape")


def _checksum_ok(block: bytes) -> bool:
    try:
        want = int(block[148:156].split(b"\0", 1)[0].strip(b" ") or b"-1", 8)
    except ValueError:
        return False
    unsigned = sum(block[:148]) + 8 * 32 + sum(block[156:])
    signed = unsigned - 2 * sum(b for b in block[:148] + block[156:] if b > 127)
    return want in (unsigned, signed)


def _pax(data: bytes) -> dict[str, str]:
    """The records of a pax header (``"%d %s=%s\\n"``), each length checked before it is used."""
    out, pos = {}, 0
    while pos < len(data) and data[pos:pos + 1] not in (b"\0", b""):
        space = data.find(b" ", pos, pos + MAX_DIGITS + 1)
        if space < 0 or not data[pos:space].isdigit():
            raise TarError(f"a pax record at byte {pos} does not start with a length of at most {MAX_DIGITS} digits")
        length = int(data[pos:space])
        end = pos + length
        if length < 5 or end > len(data) or data[end - 1:end] != b"\n" or b"=" not in data[space + 1:end]:
            raise TarError(f"a pax record at byte {pos} claims {length} bytes that do not hold 'key=value\\n'")
        key, _, value = data[space + 1:end - 1].partition(b"=")
        out[key.decode("utf-8", "surrogateescape")] = value.decode("utf-8", "surrogateescape")
        pos = end
    return out


class TarReader:
    """Headers of an uncompressed tar, in order: ``next()`` gives a `Member` or None at the end.

    `f`: a seekable binary file object (closed by `close` when `owns`). The first header is read
    at once, so a file that is no tar fails here (`TarError`)."""

    def __init__(self, f, owns: bool = False):
        self.f, self.owns, self.offset = f, owns, 0
        self._first: Member | None = self._read(first=True)
        self._started = False

    def _block(self, at: int, n: int) -> bytes:
        self.f.seek(at)
        return self.f.read(n)

    def _read(self, first: bool = False) -> Member | None:
        pending: dict[str, str] = {}
        while True:
            at = self.offset
            block = self._block(at, BLOCK)
            if not block:
                if first and at == 0:
                    raise TarError("empty file", empty=True)
                return None
            if len(block) < BLOCK:
                if at == 0 or pending:
                    raise TarError("unexpected end of data inside a header", truncated=True)
                return None
            if block.count(0) == BLOCK:
                if first and at == 0:
                    raise TarError("empty file", empty=True)
                return None
            if not _checksum_ok(block):
                if at == 0 or pending:
                    raise TarError("bad checksum")
                return None
            size, flag = _number(block[124:136]), block[156:157]
            data_at = at + BLOCK
            self.offset = data_at + -(-size // BLOCK) * BLOCK  # size >= 0: always forward
            if flag in (b"x", b"g", b"L", b"K"):
                if size > MAX_META_BYTES:
                    raise TarError(f"a {flag.decode()} header record of {size} bytes (the cap is {MAX_META_BYTES})")
                data = self._block(data_at, size)
                if len(data) < size:
                    raise TarError("unexpected end of data inside a header record", truncated=True)
                if flag == b"x":
                    pending.update(_pax(data))
                elif flag == b"g":
                    _pax(data)  # checked, not applied: a global header names no member
                else:
                    pending["path" if flag == b"L" else "linkpath"] = data.split(b"\0", 1)[0].decode(
                        "utf-8", "surrogateescape")
                continue
            name = _text(block[0:100])
            if block[257:263] == b"ustar\0" and block[345:500].strip(b"\0"):
                name = _text(block[345:500]) + "/" + name
            name = pending.get("path", name)
            linkname = pending.get("linkpath", _text(block[157:257]))
            if "size" in pending:
                raw = pending["size"]
                if not raw.isdigit() or len(raw) > MAX_DIGITS:
                    raise TarError(f"a pax size of {len(raw)} characters is not a number of at most {MAX_DIGITS} digits")
                size = int(raw)
                self.offset = data_at + -(-size // BLOCK) * BLOCK
            kind = _KINDS.get(flag, "special")
            if kind == "file" and flag == b"\0" and name.endswith("/"):
                kind = "dir"
            if kind == "dir":
                name = name.rstrip("/")
            return Member(name, size, at, data_at, kind, linkname)

    def next(self) -> Member | None:
        if not self._started:
            self._started = True
            return self._first
        return self._read()

    def close(self) -> None:
        if self.owns:
            self.f.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
