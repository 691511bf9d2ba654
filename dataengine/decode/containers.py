"""Media containers for FFmpeg: recognised by content, allow-listed per modality, opened from bytes only.

FFmpeg guesses a container from the bytes (no file name is given) and, left alone, will take
any of its ~350 demuxers: a 41-byte ``ffconcat`` text named ``.mp4`` makes it open other files
relative to the worker's folder, an SDP description opens UDP sockets, an HLS playlist fetches
URLs. `open_container` therefore hands FFmpeg the bytes as a stream with

- ``format_whitelist``: only the demuxers of the modality (`VIDEO_FORMATS`, `AUDIO_FORMATS`);
  a playlist, an SDP file or any other demuxer's data fails to open;
- ``protocol_whitelist=none``: a demuxer that tries to open a nested URL (an MP4 data
  reference, a Matroska linked segment) gets no protocol at all: no ``file``, ``udp``, ``rtp``,
  ``tcp``, ``http``, ``concat`` or ``pipe``.

When FFmpeg refuses the bytes, `sniff` says what they are (a picture, an audio file, a playlist,
a session description, ...) so the reject names it instead of a generic ``corrupt``.
`container_truncated` checks the sizes a RIFF, ISO-BMFF or EBML header declares against the data.
"""
from __future__ import annotations

import io

import av

from dataengine.errors import RejectError

AV_ERRORS = (av.FFmpegError, OSError, ValueError, RuntimeError, EOFError, IndexError, UnicodeDecodeError)
VIDEO_FORMATS = ("mov", "matroska", "avi", "gif")  # .mp4/.mov/.m4v, .mkv/.webm, .avi, animated .gif
AUDIO_FORMATS = ("wav", "flac", "ogg", "mp3", "aac", "mov", "matroska")  # + .m4a and .webm/.mka audio
_EBML_MAGIC = b"\x1a\x45\xdf\xa3"
_EBML_SEGMENT = b"\x18\x53\x80\x67"

# (kind, label, test on the first bytes); kinds: image, audio, video, reference (names other inputs)
_MAGIC = (
    ("image", "a PNG image", lambda b: b.startswith(b"\x89PNG\r\n\x1a\n")),
    ("image", "a JPEG image", lambda b: b.startswith(b"\xff\xd8\xff")),
    ("image", "a GIF image", lambda b: b[:6] in (b"GIF87a", b"GIF89a")),
    ("image", "a WebP image", lambda b: b[:4] == b"RIFF" and b[8:12] == b"WEBP"),
    ("image", "a TIFF image", lambda b: b[:4] in (b"II*\0", b"MM\0*")),
    ("audio", "a WAV file", lambda b: b[:4] in (b"RIFF", b"RF64", b"BW64") and b[8:12] == b"WAVE"),
    ("audio", "a FLAC file", lambda b: b.startswith(b"fLaC")),
    ("audio", "an Ogg file", lambda b: b.startswith(b"OggS")),
    ("audio", "an MP3 file", lambda b: b.startswith(b"ID3") or (len(b) > 1 and b[0] == 0xFF and b[1] & 0xE6 == 0xE2)),
    ("audio", "an AAC (ADTS) file", lambda b: len(b) > 1 and b[0] == 0xFF and b[1] & 0xF6 == 0xF0),
    ("audio", "an AIFF file", lambda b: b[:4] == b"FORM" and b[8:12] in (b"AIFF", b"AIFC")),
    ("video", "an AVI container", lambda b: b[:4] == b"RIFF" and b[8:12] == b"AVI "),
    ("video", "an MP4/QuickTime container", lambda b: b[4:8] in (b"ftyp", b"moov", b"mdat", b"free", b"wide")),
    ("video", "a Matroska/WebM container", lambda b: b.startswith(_EBML_MAGIC)),
)
_REFERENCES = (  # text formats FFmpeg would follow to other files or to the network
    ("ffconcat", "an FFmpeg concat playlist, which names other files"),
    ("#extm3u", "an HLS/M3U playlist, which names other files or URLs"),
    ("[playlist]", "a PLS playlist, which names other files or URLs"),
    ("<mpd", "a DASH manifest, which names other files or URLs"),
    ("v=0", "an SDP session description, which opens network sockets"),
)
_URL_SCHEMES = ("file:", "http:", "https:", "rtsp:", "rtmp:", "rtp:", "udp:", "tcp:", "srt:", "ftp:", "concat:",
                "subfile:", "data:", "pipe:", "crypto:", "async:", "cache:")


def sniff(data: bytes) -> tuple[str, str] | None:
    """(kind, label) of what the bytes are, from their content; None if not recognised."""
    head = data[:64]
    for kind, label, test in _MAGIC:
        if test(head):
            return kind, label
    text = data[:1024].lstrip(b"\xef\xbb\xbf \t\r\n").lower()
    for start, label in _REFERENCES:
        if text.startswith(start.encode()) or (start == "<mpd" and text.startswith(b"<?xml") and b"<mpd" in text):
            return "reference", label
    if text.startswith(tuple(s.encode() for s in _URL_SCHEMES)):
        return "reference", "a URL, which names a file or a network stream"
    return None


def open_container(data: bytes, formats: tuple[str, ...]) -> av.container.InputContainer:
    """Open media bytes with PyAV (header only), with only the demuxers `formats` and no protocols.

    Raises ``truncated``, ``unsupported_container`` (a recognised reference format: playlists,
    SDP, URLs) or ``corrupt``; a refused but recognised media file is left to the caller through
    `Refused` (`sniff` says what it is)."""
    try:
        return av.open(io.BytesIO(data), mode="r", metadata_errors="ignore",
                       options={"format_whitelist": ",".join(formats), "protocol_whitelist": "none"})
    except av.error.EOFError:
        raise RejectError("truncated", "the data ends before the container header is complete") from None
    except AV_ERRORS as exc:
        found = sniff(data)
        if found and found[0] == "reference":
            raise RejectError("unsupported_container", f"the file is {found[1]}; only media bytes are "
                                                       "decoded, references are never followed") from None
        raise Refused(found, f"not a readable media container: {exc}") from None


class Refused(RejectError):
    """FFmpeg would not open the bytes with the modality's demuxers; `found` is `sniff`'s answer."""

    def __init__(self, found: tuple[str, str] | None, detail: str):
        super().__init__("corrupt", detail)
        self.found = found


def container_truncated(data: bytes) -> str | None:
    """Say why the data is a cut-off RIFF (WAV/AVI), ISO-BMFF (MP4/MOV/M4A) or EBML
    (MKV/WebM) file, from the sizes its own headers declare; None if it looks whole.

    Decoders happily return the first half of a cut file, so this is checked first.
    """
    n = len(data)
    if data[:4] == b"RIFF" and n >= 8:
        size = int.from_bytes(data[4:8], "little")
        if size not in (0, 0xFFFFFFFF) and size + 8 > n:
            return f"the RIFF header declares {size + 8} bytes but the file has {n}"
    elif data[4:8] == b"ftyp":
        pos = 0
        while pos + 8 <= n:
            size, head = int.from_bytes(data[pos:pos + 4], "big"), 8
            if size == 1 and pos + 16 <= n:
                size, head = int.from_bytes(data[pos + 8:pos + 16], "big"), 16
            if size == 0 or size < head:  # 0: the box runs to the end of the file
                return None
            if pos + size > n:
                box = data[pos + 4:pos + 8].decode("latin-1")
                return f"box {box!r} at offset {pos} declares {size} bytes but {n - pos} remain"
            pos += size
    elif data[:4] == _EBML_MAGIC:
        try:
            header_size, pos = _ebml_vint(data, 4)
            pos += header_size or 0
            if data[pos:pos + 4] == _EBML_SEGMENT:
                seg_size, body = _ebml_vint(data, pos + 4)
                if seg_size is not None and body + seg_size > n:
                    return f"the Matroska segment declares {body + seg_size} bytes but the file has {n}"
        except ValueError:
            return "the Matroska header is cut off"
    return None


def _ebml_vint(data: bytes, pos: int) -> tuple[int | None, int]:
    """Read an EBML variable-size integer at `pos`: (value or None if 'unknown', next pos)."""
    if pos >= len(data) or data[pos] == 0:
        raise ValueError("bad EBML size")
    length = 9 - data[pos].bit_length()
    if pos + length > len(data):
        raise ValueError("EBML size runs past the end")
    value = data[pos] & (0xFF >> length)
    for b in data[pos + 1:pos + length]:
        value = (value << 8) | b
    unknown = value == (1 << (7 * length)) - 1
    return (None if unknown else value), pos + length
