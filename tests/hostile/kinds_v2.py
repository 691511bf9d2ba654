"""Hostile kinds of reliability v2 (issue 14): references to other files and to the network, names
and trees discovery must survive, and tar headers a parser must not trust.

`add_v2(h, outside, port)` adds them to a `Hostile`. `port` is a TCP port on 127.0.0.1 that the
test listens on: every network reference points there, so a connection proves a socket was opened.
The secret picture under `outside` is what the file references try to pull in.
"""
from __future__ import annotations

import io
import os
import tarfile
from pathlib import Path

from PIL import Image

SECRET_RGB = (201, 17, 99)  # the colour of the picture outside the root: it must never reach an output


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


def _raw_header(size_field: bytes, flag: bytes = b"0", payload: bytes = b"") -> bytes:
    block = bytearray(512)
    block[0:5] = b"a.txt"
    block[100:108] = b"0000644\0"
    block[124:136] = size_field
    block[156:157] = flag
    block[257:263] = b"ustar\0"
    block[148:156] = b"        "
    block[148:156] = b"%06o\0 " % sum(block)
    return bytes(block) + payload + b"\0" * (-len(payload) % 512)


def _tar_headers(h) -> None:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.GNU_FORMAT) as tf:
        info = tarfile.TarInfo("ok.txt")
        info.size = 32
        tf.addfile(info, io.BytesIO(b"a member before the bad header.\n"))
    good = buf.getvalue()[:1024]
    record = b"9" * 250_000 + b" size=1\n"  # tarfile parses this number in quadratic time
    for name, data in {
        "tar2/pax_digits.tar": good + _raw_header(b"%011o\0" % len(record), b"x", record),
        "tar2/negative_size.tar": good + _raw_header(b"\xff" * 12) + b"\0" * 1024,
        "tar2/long_name_bomb.tar": good + _raw_header(b"%011o\0" % (64 << 20), b"L", b"x" * 4096),
    }.items():
        h.put(name, data, "corrupt_archive")
        h.expected[name + "#ok.txt"] = "ok"
        h.needs_reader.add(name + "#ok.txt")


def add_v2(h, outside: Path, port: int) -> None:
    _references(h, outside, port)
    _names_and_trees(h)
    _tar_headers(h)

