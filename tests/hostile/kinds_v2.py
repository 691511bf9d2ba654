"""Hostile kinds of reliability v2 (issue 14): references to other files and to the network, names
and trees discovery must survive, and tar headers a parser must not trust.

`add_v2(h, outside, port)` adds them to a `Hostile`. `port` is a TCP port on 127.0.0.1 that the
test listens on: every network reference points there, so a connection proves a socket was opened.
The secret picture under `outside` is what the file references try to pull in.
"""
from __future__ import annotations

import io
import json
import os
import socket
import struct
import tarfile
import threading
import zlib
from pathlib import Path

import numpy as np
from corpus_factory import raw_tar_header
from PIL import Image

SECRET_RGB = (201, 17, 99)  # the colour of the picture outside the root: it must never reach an output


class Listener:
    """A TCP server on 127.0.0.1 that counts the connections it is offered: every network reference
    in the hostile corpus points here (`make_hostile(..., port=listener.port)`), and none may arrive."""

    def __init__(self):
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.port = self.sock.getsockname()[1]
        self.connections = []
        self.thread = threading.Thread(target=self._accept, daemon=True)
        self.thread.start()

    def _accept(self):
        while True:
            try:
                conn, addr = self.sock.accept()
            except OSError:
                return
            self.connections.append(addr)
            conn.close()

    def close(self):
        self.sock.close()


def _secret_png(outside: Path) -> Path:
    outside.mkdir(parents=True, exist_ok=True)
    path = outside / "secret.png"
    Image.new("RGB", (32, 32), SECRET_RGB).save(path)
    return path


def _references(h, outside: Path, port: int) -> None:
    secret = _secret_png(outside)
    rel = os.path.relpath(secret, h.root / "ref")
    url = f"http://127.0.0.1:{port}"
    sdp = (f"v=0\no=- 0 0 IN IP4 127.0.0.1\ns=stream\nc=IN IP4 127.0.0.1\nt=0 0\n"
           f"m=audio {port} RTP/AVP 0\n").encode()
    for name, data in {
        "ref/concat_relative.mp4": f"ffconcat version 1.0\nfile '{rel}'\n".encode(),
        "ref/concat_absolute.webm": f"ffconcat version 1.0\nfile '{secret}'\n".encode(),
        "ref/session.wav": sdp,
        "ref/session.mp4": sdp,
        "ref/hls.mp4": f"#EXTM3U\n#EXT-X-TARGETDURATION:1\n#EXTINF:1,\n{url}/seg0.ts\n#EXT-X-ENDLIST\n".encode(),
        "ref/hls_local.m4a": f"#EXTM3U\n#EXTINF:1,\n{secret}\n".encode(),
        "ref/dash.mp4": (f'<?xml version="1.0"?>\n<MPD xmlns="urn:mpeg:dash:schema:mpd:2011" type="static">'
                         f"<BaseURL>{url}/</BaseURL><Period><AdaptationSet><Representation id=\"1\" "
                         f'bandwidth="1"><BaseURL>v.mp4</BaseURL></Representation></AdaptationSet></Period></MPD>\n'
                         ).encode(),
        "ref/rtsp_url.mp3": f"rtsp://127.0.0.1:{port}/live\n".encode(),
        "ref/pls.ogg": f"[playlist]\nFile1={url}/a.ogg\nNumberOfEntries=1\n".encode(),
    }.items():
        h.put(name, data, "unsupported_container")


def _names_and_trees(h) -> None:
    d = h.root / "dsc2"
    h.put("dsc2/d.tar", b"\0" * 1024, "empty_file")  # end-of-archive blocks only
    (d / "d.tar#x").mkdir()  # a folder named like a member of d.tar beside it
    (d / "d.tar#x" / "a.txt").write_text("this would read as a member of d.tar\n")
    h.expected["dsc2/d.tar#x"] = "reserved_name"
    (d / ".cache").mkdir()
    (d / ".cache" / "notes.txt").write_text("inside a hidden folder\n")
    h.expected["dsc2/.cache"] = "hidden_folder"
    fd = os.open(d, os.O_RDONLY)  # folders made through fds: the whole path passes the system's limit
    for _ in range(18):
        os.mkdir("n" * 250, dir_fd=fd)
        nxt = os.open("n" * 250, os.O_RDONLY, dir_fd=fd)
        os.close(fd)
        fd = nxt
    leaf = os.open("far.txt", os.O_CREAT | os.O_WRONLY, dir_fd=fd)
    os.write(leaf, b"out of reach of a path\n")
    os.close(leaf)
    os.close(fd)
    depth = next(k for k in range(1, 19) if len(os.fsencode(d)) + 251 * k >= 4096)  # the first folder past PATH_MAX
    h.expected["dsc2/" + "/".join(["n" * 250] * depth)] = "path_too_long"


def _tar_headers(h) -> None:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.GNU_FORMAT) as tf:
        info = tarfile.TarInfo("ok.txt")
        info.size = 32
        tf.addfile(info, io.BytesIO(b"a member before the bad header.\n"))
    good = buf.getvalue()[:1024]
    record = b"9" * 250_000 + b" size=1\n"  # tarfile parses this number in quadratic time
    for name, data in {
        "tar2/pax_digits.tar": good + raw_tar_header(b"a.txt", b"%011o\0" % len(record), b"x", record),
        "tar2/negative_size.tar": good + raw_tar_header(b"a.txt", b"\xff" * 12) + b"\0" * 1024,
        "tar2/long_name_bomb.tar": good + raw_tar_header(b"a.txt", b"%011o\0" % (64 << 20), b"L", b"x" * 4096),
    }.items():
        h.put(name, data, "corrupt_archive")
        h.expected[name + "#ok.txt"] = "ok"
        h.needs_reader.add(name + "#ok.txt")


def _npy_header(shape: tuple, descr: str = "<f8") -> bytes:
    buf = io.BytesIO()
    np.lib.format.write_array_header_1_0(buf, {"descr": descr, "fortran_order": False, "shape": shape})
    return buf.getvalue()


def _sensor_claims(h) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    h.put("sen2/zero_wide.npy", _npy_header((10**9, 0)), "bad_shape")  # 128 bytes; 8 GB once widened
    buf = io.BytesIO()  # 20M rows of one constant byte: a few KB, 160 MB as float64
    pq.write_table(pa.table({"x": pa.array(np.zeros(20_000_000, np.int8))}), buf)
    h.put("sen2/rows_bomb.parquet", buf.getvalue(), "too_long")
    h.put("sen2/old_mac.csv", b"".join(b"%.1f,%d\r" % (i / 10, i % 7) for i in range(40)).replace(
        b"0.0,0\r", b"t,x\r0.0,0\r", 1), "ok")
    walk = b"t,x\n" + b"".join(b"%.1f,%d\n" % (i / 10, i % 5) for i in range(40))
    h.put("sen2/tiny_rate.csv", walk, "bad_sidecar")
    h.put("sen2/tiny_rate.json", b'{"rate_hz": 5e-324}', "media_rejected")
    h.put("sen2/long_label.csv", walk, "label_too_long")  # past decode.text.max_chars (100,000 here)
    h.put("sen2/long_label.json", json.dumps({"label": "walk " * 30_000}).encode(), "media_rejected")


def _png_chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def _costly_media(h) -> None:
    h.put("txt2/zalgo.txt", ("he" + "\u0301\u0316" * 45_000 + "llo\n").encode(), "combining_marks")
    buf = io.BytesIO()
    Image.new("RGB", (8, 8)).save(buf, "PNG")
    png = buf.getvalue()
    ztxt = _png_chunk(b"zTXt", b"k\0\0" + zlib.compress(b"a" * 1_000_000, 9))
    h.put("img2/text_chunks.png", png[:33] + ztxt * 70 + png[33:], "decompression_bomb")
    buf = io.BytesIO()
    Image.new("RGB", (512, 512), (90, 120, 200)).save(buf, "JPEG", progressive=True)
    jpg = buf.getvalue()
    last = jpg.rindex(b"\xff\xda")
    scan = jpg[last:last + 2 + int.from_bytes(jpg[last + 2:last + 4], "big")]
    h.put("img2/scans.jpg", jpg[:-2] + scan * 20_000 + jpg[-2:], "too_many_scans")
    nan = np.linspace(0, 1, 256, dtype=np.float32).reshape(16, 16)
    nan[4:8] = np.nan
    buf = io.BytesIO()
    Image.fromarray(nan, mode="F").save(buf, "TIFF")
    h.put("img2/nan.tiff", buf.getvalue(), "non_finite_pixels")


def _wav_claims(h) -> None:
    import soundfile as sf

    buf = io.BytesIO()
    sf.write(buf, (0.3 * np.sin(np.arange(16000) / 7)).astype(np.float32), 16000, format="WAV", subtype="PCM_16")
    wav = buf.getvalue()
    h.put("aud2/data_4gb.wav", wav[:40] + (0xF000_0000).to_bytes(4, "little") + wav[44:], "bad_header")
    h.put("aud2/no_channels.wav", wav[:22] + b"\0\0" + wav[24:], "bad_header")
    h.put("aud2/streamed.wav", b"RIFF\xff\xff\xff\xff" + wav[8:40] + b"\xff\xff\xff\xff" + wav[44:], "ok")


def _shared_companions(h) -> None:
    """Two media files of one stem: their caption and sidecar belong to neither, each media file is kept."""
    import soundfile as sf

    buf = io.BytesIO()
    Image.fromarray((np.indices((64, 64)).sum(0) * 2 % 256).astype(np.uint8)).convert("RGB").save(buf, "PNG")
    h.put("shr2/pair.png", buf.getvalue(), "ok")
    buf = io.BytesIO()
    sf.write(buf, (0.3 * np.sin(np.arange(16000) / 5)).astype(np.float32), 16000, format="WAV", subtype="PCM_16")
    h.put("shr2/pair.wav", buf.getvalue(), "ok")
    h.put("shr2/pair.txt", b"Which of the two does this caption describe?\n", "shared_caption")
    h.put("shr2/pair.json", b'{"license": "cc0"}', "shared_sidecar")


def add_v2(h, outside: Path, port: int) -> None:
    _references(h, outside, port)
    _names_and_trees(h)
    _tar_headers(h)
    _sensor_claims(h)
    _costly_media(h)
    _wav_claims(h)
    _shared_companions(h)

