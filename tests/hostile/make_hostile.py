"""The hostile corpus: broken and malicious inputs of every modality, each with its expected reject reason.

``make_hostile(root)`` writes the files and returns a `Hostile`: ``expected``
maps every input path (as the pipeline names it: ``folder/file``,
``shard.tar#member``, ``doc.jsonl#L1``) to the specific reason the pipeline must
reject it with (or ``"ok"`` for a well-formed companion, e.g. the good members
of a tar shard). ``mutate()`` changes the ``chg/`` files the way a concurrent
writer would; call it after discovery and before decoding. ``needs_reader``
lists the paths whose reason depends on the decode stage reading inputs with
`dataengine.decode.source.read_input` (tar members, changed files).

The recipe caps the corpus assumes are ``HOSTILE_DECODE`` (pass it as the
recipe's ``decode``). Run it by hand to look at the files:

    python tests/hostile/make_hostile.py /tmp/hostile
"""
from __future__ import annotations

import io
import json
import os
import struct
import sys
import tarfile
import tempfile
import zlib
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from corpus_factory import _bomb_png  # noqa: E402 - a PNG header claiming 100000 x 100000 pixels

from dataengine import mediaio  # noqa: E402

from hostile.kinds_v2 import add_v2  # noqa: E402

MAX_FILE_BYTES = 4 * 2**20
HOSTILE_DECODE = {
    "max_file_bytes": MAX_FILE_BYTES,
    "image": {"max_pixels": 4_000_000},
    "video": {"fps": 10.0, "max_seconds": 10.0, "max_frames": 41, "max_pixels": 65_536, "backend": "pyav"},
    "audio": {"sample_rate": 16000, "max_seconds": 30.0},
    "sensor": {"rate_hz": 10.0, "max_rows": 4096, "max_nan_ratio": 0.1},
    "text": {"max_chars": 100_000, "max_record_bytes": 100_000},
}


@dataclass
class Hostile:
    root: Path
    expected: dict[str, str] = field(default_factory=dict)
    needs_reader: set[str] = field(default_factory=set)
    mutations: list = field(default_factory=list)

    def put(self, rel: str, data: bytes, reason: str) -> Path:
        path = self.root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
        self.expected[rel] = reason
        return path

    def mutate(self) -> None:
        """Change the chg/ files as a writer racing the pipeline would (after discovery)."""
        for fn in self.mutations:
            fn()


# ------------------------------------------------------------------ small valid media
def _png(side: int = 48) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (side, side, 3), np.uint8)).save(buf, "PNG")
    return buf.getvalue()


def _img(fmt: str, side: int = 48, **kw) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(np.random.default_rng(1).integers(0, 255, (side, side, 3), np.uint8)).save(buf, fmt, **kw)
    return buf.getvalue()


def _wav(x: np.ndarray, rate: int, subtype: str) -> bytes:
    import soundfile as sf

    buf = io.BytesIO()
    sf.write(buf, x, rate, subtype=subtype, format="WAV")
    return buf.getvalue()


def _tone(seconds: float = 1.0, rate: int = 16000) -> np.ndarray:
    return (0.3 * np.sin(2 * np.pi * 440 * np.arange(int(rate * seconds)) / rate)).astype(np.float32)


def _video(ext: str, side: int = 64, frames: int = 10, audio: bool = False) -> bytes:
    rng = np.random.default_rng(2)
    arr = rng.integers(0, 255, (frames, side, side, 3), np.uint8)
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / f"v{ext}"
        mediaio.write_video(path, arr, 10, _tone(frames / 10) if audio else None, 16000 if audio else None)
        return path.read_bytes()


def _png_chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)


def _patch_box(data: bytes, box: bytes, field_at: int, value: int, size: int = 4) -> bytes:
    """Overwrite a big-endian field `field_at` bytes into the payload of the first `box` (ISO-BMFF)."""
    at = data.index(box) + 4 + field_at
    return data[:at] + value.to_bytes(size, "big") + data[at + size:]


# ------------------------------------------------------------------ the kinds
def _images(h: Hostile) -> None:
    png = _png()
    h.put("img/truncated.png", png[: len(png) // 2], "truncated")
    h.put("img/empty.jpg", b"", "empty_file")
    h.put("img/pixel_bomb.png", _bomb_png(), "too_many_pixels")
    ihdr = struct.pack(">IIBBBBB", 0, 64, 8, 2, 0, 0, 0)
    h.put("img/zero_width.png", b"\x89PNG\r\n\x1a\n" + _png_chunk(b"IHDR", ihdr) + _png_chunk(b"IEND", b""),
          "corrupt")
    # a 64 MB zTXt text chunk in 64 KB: Pillow's MAX_TEXT_CHUNK must stop it
    ztxt = _png_chunk(b"zTXt", b"Comment\0\0" + zlib.compress(b"\0" * (64 * 2**20), 9))
    h.put("img/ztxt_bomb.png", png[:33] + ztxt + png[33:], "decompression_bomb")
    gif = bytearray(_img("GIF"))
    gif[6:10] = struct.pack("<HH", 65535, 65535)  # logical screen
    gif[gif.index(b"\x2c") + 5: gif.index(b"\x2c") + 9] = struct.pack("<HH", 65535, 65535)  # image descriptor
    h.put("img/gif_screen_bomb.gif", bytes(gif), "too_many_pixels")
    tif = _img("TIFF")
    h.put("img/tiff_bomb.tif", tif.replace(struct.pack("<HHII", 256, 4, 1, 48), struct.pack("<HHII", 256, 4, 1, 10**6))
          .replace(struct.pack("<HHII", 257, 4, 1, 48), struct.pack("<HHII", 257, 4, 1, 10**6)), "too_many_pixels")
    jpg = _img("JPEG", quality=80)
    sof = jpg.index(b"\xff\xc0")
    h.put("img/jpeg_sof_bomb.jpg", jpg[: sof + 5] + struct.pack(">HH", 65000, 65000) + jpg[sof + 9:],
          "too_many_pixels")
    webp = _img("WEBP", quality=80)
    h.put("img/truncated.webp", webp[: len(webp) // 2], "truncated")
    h.put("img/sound_named.png", _wav(_tone(0.2), 16000, "PCM_16"), "not_an_image")


def _audio(h: Hostile) -> None:
    wav = _wav(_tone(), 16000, "PCM_16")
    h.put("aud/truncated.wav", wav[: len(wav) // 2], "truncated")
    x = _tone()
    x[100:9000] = np.nan
    h.put("aud/nan.wav", _wav(x, 16000, "FLOAT"), "non_finite_values")
    x = _tone()
    x[::3] = np.inf
    h.put("aud/inf.wav", _wav(x, 16000, "FLOAT"), "non_finite_values")
    bad = bytearray(wav)
    bad[24:28] = struct.pack("<I", 3)           # 3 Hz
    bad[28:32] = struct.pack("<I", 6)           # byte rate to match
    h.put("aud/absurd_rate.wav", bytes(bad), "bad_sample_rate")
    h.put("aud/empty_stream.wav", _wav(np.zeros(0, np.float32), 16000, "PCM_16"), "empty_audio")
    flac = _flac()
    h.put("aud/absurd_duration.flac", flac, "absurd_duration")


def _flac() -> bytes:
    """One second of tone whose STREAMINFO claims 2^36 - 1 samples (about 50 days at 16 kHz)."""
    import soundfile as sf

    buf = io.BytesIO()
    sf.write(buf, _tone(), 16000, format="FLAC", subtype="PCM_16")
    data = bytearray(buf.getvalue())
    at = 8 + 10  # "fLaC", block header (4), then min/max block (4), min/max frame (6)
    packed = int.from_bytes(data[at:at + 8], "big")  # rate 20 | channels 3 | bits 5 | total samples 36
    data[at:at + 8] = ((packed & ~((1 << 36) - 1)) | ((1 << 36) - 1)).to_bytes(8, "big")
    return bytes(data)


def _video_kinds(h: Hostile) -> None:
    webm, avi, mp4 = _video(".webm"), _video(".avi"), _video(".mp4")
    h.put("vid/truncated.webm", webm[: len(webm) * 2 // 3], "truncated")
    h.put("vid/truncated.avi", avi[: len(avi) // 2], "truncated")
    h.put("vid/image_named.mp4", _png(), "not_a_video")
    with tempfile.TemporaryDirectory() as tmp:
        mediaio.write_audio(Path(tmp) / "a.mp3", _tone(), 16000)
        h.put("vid/audio_only.mkv", (Path(tmp) / "a.mp3").read_bytes(), "no_video_stream")
    h.put("vid/over_cap.mp4", _video(".mp4", side=320, frames=3), "too_many_pixels")
    h.put("vid/dims_bomb.avi", _raw_avi_bomb(), "too_many_pixels")
    # mvhd/mdhd (version 0: timescale at +12, duration at +16) and the stts sample delta (+12)
    # claim 2^28 s per frame: about 85 years of video in 10 frames
    dur = mp4
    for box in (b"mvhd", b"mdhd"):
        dur = _patch_box(_patch_box(dur, box, 12, 1), box, 16, 0x7FFFFFFF)
    dur = _patch_box(_patch_box(dur, b"stts", 12, 1 << 28), b"elst", 8, 0x7FFFFFFF)  # edit list: 2^31 s
    h.put("vid/absurd_duration.mp4", dur, "absurd_duration")
    moov = mp4.index(b"moov") - 4
    h.put("vid/moov_size_bomb.mp4", mp4[:moov] + struct.pack(">I", 0x7FFFFFF0) + mp4[moov + 4:], "truncated")


def _raw_avi_bomb() -> bytes:
    """Uncompressed video whose headers claim 8000 x 8000 frames (192 MB each once decoded)."""
    import av

    buf = io.BytesIO()
    with av.open(buf, "w", format="avi") as c:
        s = c.add_stream("rawvideo", rate=10)
        s.width = s.height = 16
        s.pix_fmt = "bgr24"
        for _ in range(3):
            c.mux(s.encode(av.VideoFrame.from_ndarray(np.zeros((16, 16, 3), np.uint8), format="rgb24")))
        c.mux(s.encode(None))
    data = bytearray(buf.getvalue())
    strf, avih = data.index(b"strf") + 8, data.index(b"avih") + 8
    data[strf + 4: strf + 12] = struct.pack("<ii", 8000, 8000)   # BITMAPINFOHEADER biWidth, biHeight
    data[avih + 32: avih + 40] = struct.pack("<II", 8000, 8000)  # MainAVIHeader dwWidth, dwHeight
    return bytes(data)


def _sensors(h: Hostile) -> None:
    rng = np.random.default_rng(3)
    side = json.dumps({"label": "walking", "rate_hz": 10.0}).encode()
    vals = rng.normal(size=(50, 3))
    rows = "".join(f"{a:.4f},{b:.4f},{'inf' if i % 3 == 0 else f'{c:.4f}'}\n" for i, (a, b, c) in enumerate(vals))
    h.put("sen/inf.csv", b"x,y,z\n" + rows.encode(), "non_finite_values")
    h.put("sen/inf.json", side, "media_rejected")
    import pyarrow as pa
    import pyarrow.parquet as pq

    buf = io.BytesIO()
    pq.write_table(pa.table({"x": np.full(50, np.nan), "y": vals[:, 1]}), buf)
    h.put("sen/nan_pq.parquet", buf.getvalue(), "non_finite_values")  # its own stem: a shared sidecar is nobody's
    h.put("sen/nan_pq.json", side, "media_rejected")
    buf = io.BytesIO()
    arr = vals.copy()
    arr[:, 0] = np.nan
    np.save(buf, arr)
    h.put("sen/nan.npy", buf.getvalue(), "non_finite_values")
    h.put("sen/nan.json", side, "media_rejected")
    buf = io.BytesIO()
    np.save(buf, np.array([{"__reduce__": "os.system"}], dtype=object), allow_pickle=True)
    h.put("sen/pickled.npy", buf.getvalue(), "pickle_not_allowed")
    header = {"descr": "<f8", "fortran_order": False, "shape": (10**12, 3)}
    buf = io.BytesIO()
    np.lib.format.write_array_header_1_0(buf, header)
    h.put("sen/shape_bomb.npy", buf.getvalue() + b"\0" * 64, "truncated")
    h.put("sen/absurd_duration.csv", b"t,x\n0,1\n1000000000,2\n", "too_long")
    h.put("sen/backwards.csv", b"t,x\n0,1\n2,2\n1,3\n3,4\n", "bad_time_column")
    h.put("sen/wide.csv", (",".join(f"c{i}" for i in range(5000)) + "\n" + ",".join("1" for _ in range(5000))
                           + "\n" + ",".join("2" for _ in range(5000)) + "\n").encode(), "too_many_channels")
    good = b"t,x\n" + b"".join(f"{i / 10:.1f},{v:.4f}\n".encode() for i, v in enumerate(vals[:, 0]))
    h.put("sen/deep.csv", good, "ok")
    h.put("sen/deep.json", b"[" * 50_000 + b"]" * 50_000, "json_too_deep")
    h.put("sen/huge.csv", b"t,x\n" + b"".join(f"{i / 10:.1f},{v:.4f}\n".encode() for i, v in enumerate(vals[:, 1])),
          "ok")
    h.put("sen/huge.json", b'{"label": "' + b"a" * 2_000_000 + b'"}', "json_too_large")


def _texts(h: Hostile) -> None:
    h.put("txt/overlong.txt", b"path \xc0\xaf\xc0\xaf etc/passwd is an overlong slash\n", "invalid_utf8")
    h.put("txt/surrogate.txt", b"an encoded surrogate \xed\xa0\x80 is not UTF-8\n", "invalid_utf8")
    h.put("txt/utf16.txt", "A document saved as UTF-16 by an old editor.\n".encode("utf-16"), "binary_text")
    h.put("txt/controls.txt", bytes(range(1, 9)) * 200 + b"hidden text", "binary_text")
    h.put("txt/huge.txt", b"word " * 90_000, "too_long")
    h.put("jsonl/deep.jsonl", b'{"text": ' + b"[" * 40_000 + b"]" * 40_000 + b"}\n", "")
    h.expected.pop("jsonl/deep.jsonl")
    h.expected["jsonl/deep.jsonl#L1"] = "bad_json"
    h.put("jsonl/huge_record.jsonl", b'{"text": "' + b"a" * 200_000 + b'"}\n', "")
    h.expected.pop("jsonl/huge_record.jsonl")
    h.expected["jsonl/huge_record.jsonl#L1"] = "record_too_large"
    h.put("jsonl/mixed.jsonl", b'{"text": NaN}\n[1, 2]\n{"text": "ok \xff"}\n', "")
    h.expected.pop("jsonl/mixed.jsonl")
    h.expected.update({"jsonl/mixed.jsonl#L1": "bad_json", "jsonl/mixed.jsonl#L2": "bad_record",
                       "jsonl/mixed.jsonl#L3": "invalid_utf8"})


def _discovery(h: Hostile, outside: Path) -> None:
    d = h.root / "dsc"
    d.mkdir(parents=True, exist_ok=True)
    outside.mkdir(parents=True, exist_ok=True)
    (outside / "secret.txt").write_text("a secret outside the input root\n")
    os.symlink(outside / "secret.txt", d / "escape.txt")
    h.expected["dsc/escape.txt"] = "symlink_outside_root"
    os.symlink(outside, d / "escape_dir")
    h.expected["dsc/escape_dir"] = "symlink_outside_root"
    os.symlink(d / "escape_via_loop_b.txt", d / "loop_a.txt")
    os.symlink(d / "loop_a.txt", d / "escape_via_loop_b.txt")
    h.expected["dsc/loop_a.txt"] = h.expected["dsc/escape_via_loop_b.txt"] = "symlink_loop"
    os.symlink(d / "missing.jpg", d / "dangling.jpg")
    h.expected["dsc/dangling.jpg"] = "broken_symlink"
    os.mkfifo(d / "pipe.wav")
    h.expected["dsc/pipe.wav"] = "not_a_file"
    with open(d / "sparse.mp4", "wb") as f:  # 10 GB on paper, a few KB on disk
        f.truncate(10 * 2**30)
    h.expected["dsc/sparse.mp4"] = "file_too_large"
    name = os.fsencode(str(d)) + b"/caf\xe9-latin1-name.txt"
    with open(name, "wb") as f:
        f.write(b"a file whose name is not UTF-8\n")
    h.expected["dsc/caf\\xe9-latin1-name.txt"] = "bad_filename"


def _changing(h: Hostile) -> None:
    grows = h.put("chg/grows.txt", b"a log file that is still being written\n", "changed_since_discovery")
    shrinks = h.put("chg/shrinks.wav", _wav(_tone(), 16000, "PCM_16"), "changed_since_discovery")
    vanishes = h.put("chg/vanishes.png", _png(), "vanished")
    replaced = h.put("chg/replaced.png", _png(), "changed_since_discovery")

    def grow():
        with open(grows, "ab") as f:
            f.write(b"another line\n")

    def shrink():
        with open(shrinks, "r+b") as f:
            f.truncate(100)

    def replace():
        other = _img("PNG")
        data = other[: len(_png())].ljust(len(_png()), b"\0")
        st = os.stat(replaced)
        replaced.write_bytes(data)
        os.utime(replaced, ns=(st.st_atime_ns, st.st_mtime_ns + 1_000_000_000))

    h.mutations += [grow, shrink, vanishes.unlink, replace]
    h.needs_reader |= {"chg/grows.txt", "chg/shrinks.wav", "chg/vanishes.png", "chg/replaced.png"}


def _tar_add(tf: tarfile.TarFile, name: str, data: bytes = b"", **kw) -> None:
    info = tarfile.TarInfo(name)
    info.size, info.mtime, info.mode = len(data), 0, 0o644
    for k, v in kw.items():
        setattr(info, k, v)
    tf.addfile(info, io.BytesIO(data) if info.isreg() else None)


def _tars(h: Hostile) -> None:
    (h.root / "wds").mkdir(parents=True, exist_ok=True)
    png = _png()
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.GNU_FORMAT) as tf:
        _tar_add(tf, "s000.png", png)
        _tar_add(tf, "s000.txt", b"A square of random coloured noise.\n")
        _tar_add(tf, "s000.json", json.dumps({"url": "http://example.com/s000.png", "width": 48}).encode())
        _tar_add(tf, "s001.png", png[: len(png) // 2])
        _tar_add(tf, "s002.txt", b"\xff\xfe not utf-8 caption")
        _tar_add(tf, "../escape.txt", b"written outside the extraction folder")
        _tar_add(tf, "/etc/cron.d/evil.txt", b"absolute member path")
        _tar_add(tf, "sub/../../escape2.jpg", png)
        _tar_add(tf, "s003.png", type=tarfile.SYMTYPE, linkname="/etc/passwd")
        _tar_add(tf, "s004.png", type=tarfile.LNKTYPE, linkname="s000.png")
        _tar_add(tf, "s005.wav", type=tarfile.CHRTYPE, devmajor=1, devminor=5)
        _tar_add(tf, "s006.wav", type=tarfile.FIFOTYPE)
        _tar_add(tf, "s007.png", png)
        _tar_add(tf, "s007.png", png)  # the same name twice: which copy is meant?
    h.put("wds/shard-000.tar", buf.getvalue(), "")
    h.expected.pop("wds/shard-000.tar")
    t = "wds/shard-000.tar#"
    h.expected.update({
        t + "s000.png": "ok", t + "s000.txt": "ok", t + "s000.json": "ok",
        t + "s001.png": "truncated", t + "s002.txt": "invalid_utf8",
        t + "../escape.txt": "unsafe_member_path", t + "/etc/cron.d/evil.txt": "unsafe_member_path",
        t + "sub/../../escape2.jpg": "unsafe_member_path",
        t + "s003.png": "link_member", t + "s004.png": "link_member",
        t + "s005.wav": "special_member", t + "s006.wav": "special_member",
        t + "s007.png": "duplicate_member",
    })
    h.needs_reader |= {t + "s000.png", t + "s000.txt", t + "s000.json", t + "s001.png", t + "s002.txt"}
    # a member whose header claims more bytes than the archive holds
    big = io.BytesIO()
    with tarfile.open(fileobj=big, mode="w", format=tarfile.GNU_FORMAT) as tf:
        _tar_add(tf, "k.jpg", b"\xff\xd8\xff" + b"\0" * 5000)
    raw = bytearray(big.getvalue())
    raw[124:136] = b"%011o\0" % (3 * MAX_FILE_BYTES)
    raw[148:156] = b"        "
    raw[148:156] = b"%06o\0 " % sum(raw[:512])
    h.put("wds/member_size_bomb.tar", bytes(raw[:4096]), "")
    h.expected.pop("wds/member_size_bomb.tar")
    h.expected["wds/member_size_bomb.tar#k.jpg"] = "file_too_large"
    good = buf.getvalue()
    h.put("wds/cut_in_data.tar", good[:700], "")
    h.expected.pop("wds/cut_in_data.tar")
    h.expected["wds/cut_in_data.tar#s000.png"] = "truncated"
    h.put("wds/cut_in_header.tar", good[:300], "truncated")
    h.put("wds/noise.tar", np.random.default_rng(5).bytes(3000), "corrupt_archive")
    with tempfile.TemporaryDirectory() as tmp:
        with tarfile.open(Path(tmp) / "g.tar.gz", "w:gz") as tf:
            _tar_add(tf, "a.txt", b"gzip is not a raw tar")
        h.put("wds/gzipped.tar", (Path(tmp) / "g.tar.gz").read_bytes(), "compressed_archive")


def make_hostile(root: Path, outside: Path | None = None, port: int = 9) -> Hostile:
    """Write the hostile corpus under `root` (and secrets under `outside`, a folder beside it);
    network references point to 127.0.0.1:`port` (9, discard, unless a test listens)."""
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    h = Hostile(root)
    _images(h)
    _audio(h)
    _video_kinds(h)
    _sensors(h)
    _texts(h)
    outside = Path(outside) if outside else root.parent / (root.name + "-outside")
    _discovery(h, outside)
    _changing(h)
    _tars(h)
    add_v2(h, outside, port)
    h.expected = dict(sorted(h.expected.items()))
    return h


if __name__ == "__main__":
    out = make_hostile(Path(sys.argv[1]))
    for path, reason in out.expected.items():
        print(f"{reason:24s} {path}")
    print(f"{len(out.expected)} inputs, {len(set(out.expected.values()))} distinct reasons")
