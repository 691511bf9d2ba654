"""URIs for sources and outputs: a local path, ``file://...``, ``s3://bucket/prefix``, or any other
scheme `pyarrow.fs.FileSystem.from_uri` reaches (``gs://``, ``hdfs://``, ...).

One small layer over `pyarrow.fs`. S3 settings come from the standard AWS variables
(`options_from_env`: ``AWS_ENDPOINT_URL_S3`` / ``AWS_ENDPOINT_URL``, ``AWS_ACCESS_KEY_ID``,
``AWS_SECRET_ACCESS_KEY``, ``AWS_SESSION_TOKEN``, ``AWS_REGION`` / ``AWS_DEFAULT_REGION``); with no keys
set, pyarrow's default credential chain applies (config files, instance role). Ray workers may run
with another environment than the driver (a Ray started before the variables were set, another node),
so the driver captures a `StorageOptions` once and ships it in the stage (`DecodeStage.storage_options`);
every function here takes it as ``options`` (None: this process's environment). Its repr never
shows the keys.

Commit rule: locally `write_bytes_atomic` is a temp name plus a rename. On S3 a PUT makes one object
appear whole, but there is no atomic rename of a folder (a "move" is copy + delete, object by
object), so a run on object storage commits by writing ``manifest.json`` last: a reader trusts a
folder only once its manifest is there (the caller's job).

Stamps: S3 listings give size and LastModified; ``mtime_ns`` here is LastModified in ns. Some servers
list with milliseconds but HEAD with seconds, so compare remote mtimes with `same_mtime` (to the second).
"""
from __future__ import annotations

import io
import os
import re
import secrets
from dataclasses import dataclass, field
from datetime import datetime, timezone
from functools import lru_cache
from pathlib import Path
from typing import NamedTuple

import pyarrow.fs as pafs

_SCHEME = re.compile(r"^([A-Za-z][A-Za-z0-9+.-]*)://")


@dataclass(frozen=True)
class StorageOptions:
    """How to reach object storage, captured on the driver and shipped to workers (hashable, picklable)."""

    endpoint: str | None = None          # e.g. http://127.0.0.1:9000 (MinIO, moto); None: AWS itself
    region: str | None = None
    access_key: str | None = field(default=None, repr=False)
    secret_key: str | None = field(default=None, repr=False)
    session_token: str | None = field(default=None, repr=False)

    def __repr__(self) -> str:  # never the secrets, only whether they are set
        return (f"StorageOptions(endpoint={self.endpoint!r}, region={self.region!r}, "
                f"keys={'set' if self.access_key else 'default chain'})")


class Entry(NamedTuple):
    rel: str       # posix path relative to the listed root
    size: int
    mtime_ns: int


class FileTooLarge(ValueError):
    """`read_bytes` refused an object over its cap (nothing was downloaded)."""


def options_from_env(env=None) -> StorageOptions:
    env = os.environ if env is None else env
    get = lambda *names: next((env[n] for n in names if env.get(n)), None)  # noqa: E731
    return StorageOptions(endpoint=get("AWS_ENDPOINT_URL_S3", "AWS_ENDPOINT_URL"),
                          region=get("AWS_REGION", "AWS_DEFAULT_REGION"),
                          access_key=get("AWS_ACCESS_KEY_ID"), secret_key=get("AWS_SECRET_ACCESS_KEY"),
                          session_token=get("AWS_SESSION_TOKEN"))


def scheme(uri) -> str:
    m = _SCHEME.match(str(uri))
    return m.group(1).lower() if m else ""


def is_remote(uri) -> bool:
    """True for anything but a local path or ``file://``."""
    return scheme(uri) not in ("", "file")


def normalize(uri) -> str:
    """A local path (or file:// URI) made absolute and resolved; a remote URI without trailing '/'."""
    if not is_remote(uri):
        return str(Path(local_path(uri)).expanduser().resolve())
    s = str(uri)
    return s.rstrip("/") if len(s.rstrip("/")) > len(scheme(s)) + 3 else s


def join(uri, rel: str) -> str:
    if not is_remote(uri):
        return os.path.join(local_path(uri), rel)
    return str(uri).rstrip("/") + "/" + rel


def resolve(uri, options: StorageOptions | None = None) -> tuple[pafs.FileSystem, str]:
    """(FileSystem, path inside it) for `uri`; s3 settings from `options` (None: this environment)."""
    s = scheme(uri)
    if s in ("", "file"):
        return _local_fs(), str(Path(local_path(uri)).expanduser().absolute())
    if s in ("s3", "s3a"):
        path = str(uri)[len(s) + 3:]
        return _s3(options or options_from_env(), path.split("/", 1)[0]), path.rstrip("/")
    return pafs.FileSystem.from_uri(str(uri))


def list_top(uri, options: StorageOptions | None = None) -> tuple[list[Entry], list[str]]:
    """The files and folders (names, sorted) directly under a remote `uri`: one level, no recursion."""
    fs, path = resolve(uri, options)
    cut = len(path.rstrip("/")) + 1
    infos = fs.get_file_info(pafs.FileSelector(path, recursive=False, allow_not_found=True))
    files = sorted(Entry(i.path[cut:], i.size, i.mtime_ns or 0) for i in infos if i.type == pafs.FileType.File)
    return files, sorted(i.path[cut:] for i in infos if i.type == pafs.FileType.Directory)


def is_dir(uri, options: StorageOptions | None = None) -> bool:
    """True for a folder, or an S3 prefix with at least one object under it (or a bucket)."""
    fs, path = resolve(uri, options)
    return fs.get_file_info(path).type == pafs.FileType.Directory


def walk(uri, options: StorageOptions | None = None) -> list[Entry]:
    """Every file under `uri` (recursively), sorted by relative path; [] when there is none."""
    fs, path = resolve(uri, options)
    sel = pafs.FileSelector(path, recursive=True, allow_not_found=True)
    cut = len(path.rstrip("/")) + 1
    return sorted(Entry(i.path[cut:], i.size, i.mtime_ns or 0) for i in fs.get_file_info(sel)
                  if i.type == pafs.FileType.File)


def open_input(uri, options: StorageOptions | None = None):
    """A random-access `pyarrow.NativeFile` (one HEAD on S3; each `read_at` is one ranged GET)."""
    fs, path = resolve(uri, options)
    return fs.open_input_file(path)


def read_bytes(uri, max_bytes: int, options: StorageOptions | None = None) -> bytes:
    """The whole object; `FileTooLarge` (nothing read) when it holds more than `max_bytes`."""
    with open_input(uri, options) as f:
        size = f.size()
        if size > max_bytes:
            raise FileTooLarge(f"{uri}: {size} bytes > {max_bytes}")
        return f.read_at(size, 0) if size else b""


def read_range(uri, offset: int, size: int, options: StorageOptions | None = None) -> bytes:
    """`size` bytes from `offset` (fewer at the end): one ranged GET on S3, e.g. a tar member."""
    with open_input(uri, options) as f:
        return f.read_at(size, offset)


def file_mtime_ns(f, fs: pafs.FileSystem, path: str) -> int:
    """The mtime of an opened file: S3's Last-Modified from the open's own HEAD, else one more stat."""
    try:
        stamp = dict(f.metadata() or {}).get("Last-Modified", b"").decode()  # Arrow writes it as ISO 8601
        dt = datetime.strptime(stamp, "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=timezone.utc)
        return int(dt.timestamp()) * 10**9
    except (AttributeError, ValueError):
        return fs.get_file_info(path).mtime_ns or 0


def same_mtime(a_ns: int, b_ns: int) -> bool:
    """Remote mtimes agree to the second (listings and HEAD differ in precision)."""
    return a_ns // 10**9 == b_ns // 10**9


def write_bytes_atomic(uri, data: bytes, options: StorageOptions | None = None) -> None:
    """Readers see the old content or all of `data`: temp + rename locally, one PUT on S3."""
    if not is_remote(uri):
        path = Path(local_path(uri))
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}-{secrets.token_hex(4)}")
        try:
            tmp.write_bytes(data)
            os.replace(tmp, path)
        finally:
            tmp.unlink(missing_ok=True)
        return
    with open_output_stream(uri, options) as out:
        out.write(data)


def open_output_stream(uri, options: StorageOptions | None = None):
    """A write stream (parent folders made locally); on S3 the object appears whole when it is closed."""
    fs, path = resolve(uri, options)
    if not is_remote(uri):
        Path(path).parent.mkdir(parents=True, exist_ok=True)
    return fs.open_output_stream(path)


def upload_file(local: str | Path, uri, options: StorageOptions | None = None, chunk: int = 8 << 20) -> None:
    """Stream a local file to `uri` (on S3 a multipart upload: the object appears whole at the end)."""
    with open(local, "rb") as src, open_output_stream(uri, options) as out:
        for block in iter(lambda: src.read(chunk), b""):
            out.write(block)


def delete_file(uri, options: StorageOptions | None = None) -> None:
    """Delete one file / object; nothing when it is not there. On S3, Arrow then keeps the parent "folder"
    with an empty ``parent/`` marker object (readers and `walk` skip it)."""
    fs, path = resolve(uri, options)
    try:
        fs.delete_file(path)
    except FileNotFoundError:
        pass


def remove_tree(uri, options: StorageOptions | None = None) -> None:
    """Delete a folder / every object under a prefix; nothing when it is not there."""
    fs, path = resolve(uri, options)
    try:
        fs.delete_dir(path)
    except FileNotFoundError:
        pass


class ReadAhead(io.RawIOBase):
    """A seekable reader over a NativeFile that fetches `chunk` bytes per request: listing a tar's
    headers on S3 costs about size/chunk ranged GETs, and big members are skipped, not read.
    `owns`: closing it closes `f`."""

    def __init__(self, f, chunk: int = 4 << 20, *, owns: bool = False):
        self.f, self.chunk, self.pos, self.size, self.owns = f, chunk, 0, f.size(), owns
        self.buf, self.start = b"", 0

    def readable(self) -> bool:
        return True

    seekable = readable

    def tell(self) -> int:
        return self.pos

    def seek(self, offset: int, whence: int = 0) -> int:
        self.pos = {0: 0, 1: self.pos, 2: self.size}[whence] + offset
        return self.pos

    def read(self, n: int = -1) -> bytes:
        n = max(0, self.size - self.pos) if n is None or n < 0 else min(n, max(0, self.size - self.pos))
        if n == 0:
            return b""
        if not self.start <= self.pos <= self.pos + n <= self.start + len(self.buf):
            self.start, self.buf = self.pos, self.f.read_at(max(n, self.chunk), self.pos)
        data = self.buf[self.pos - self.start: self.pos - self.start + n]
        self.pos += len(data)
        return data

    def close(self) -> None:  # also when collected: the NativeFile is closed only if it was handed over
        if self.owns:
            self.f.close()
        super().close()


def local_path(uri) -> str:
    """The file-system path of a local path or file:// URI."""
    s = str(uri)
    if scheme(s) == "file":
        from urllib.parse import unquote, urlparse

        return unquote(urlparse(s).path)
    return s


@lru_cache(maxsize=1)
def _local_fs() -> pafs.LocalFileSystem:
    return pafs.LocalFileSystem()


@lru_cache(maxsize=64)
def _s3(options: StorageOptions, bucket: str) -> pafs.S3FileSystem:
    region = options.region
    if not region and not options.endpoint:  # AWS itself: ask where the bucket lives (as from_uri does)
        try:
            region = pafs.resolve_s3_region(bucket)
        except OSError:
            region = None
    kw = {"access_key": options.access_key, "secret_key": options.secret_key,
          "session_token": options.session_token} if options.access_key else {}
    return pafs.S3FileSystem(region=region, endpoint_override=options.endpoint,
                             allow_delayed_open=True, **kw)  # delayed open: a small write is one PUT
