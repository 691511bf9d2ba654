"""Audio decoding: bytes -> mono float32 [N] in [-1, 1] at a target sample rate.

PyAV (bundled FFmpeg) decodes from memory; soundfile is the fallback for data
FFmpeg does not recognise. Decoding stops once `max_seconds` are in hand, so
memory stays bounded whatever the file's length. Resampling uses torchaudio's
sinc resampler (`transforms.Resample`, the kernel of `functional.resample`
cached per rate pair); torchaudio's load/save do not work here.

`decode_audio_track` is the same decoder for the audio track of a video
container; it returns None when there is no audio stream.
"""
from __future__ import annotations

import functools
import io
import math

import av
import numpy as np

from dataengine.errors import RejectError

AUDIO_EXTS = frozenset({".wav", ".flac", ".ogg", ".oga", ".opus", ".mp3", ".m4a", ".aac"})

AV_ERRORS = (av.FFmpegError, OSError, ValueError, RuntimeError, EOFError, IndexError, UnicodeDecodeError)
MIN_RATE, MAX_RATE = 1_000, 384_000  # source sample rates outside this are damaged headers
MAX_DECLARED_SECONDS = 7 * 86_400  # a header claiming more than a week of media is damaged or hostile
_MAX_RATIO_TERM = 1_000  # largest rate / gcd(source, target) handed to torchaudio
_EBML_MAGIC = b"\x1a\x45\xdf\xa3"
_EBML_SEGMENT = b"\x18\x53\x80\x67"


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


def _planar_float(frame: av.AudioFrame) -> np.ndarray:
    """An audio frame as float32 [C, n] in [-1, 1], whatever its sample format."""
    arr = frame.to_ndarray()
    channels = len(frame.layout.channels)
    if not frame.format.is_planar:
        arr = arr.reshape(-1, channels).T
    if arr.dtype.kind == "i":
        arr = arr.astype(np.float32) / float(2 ** (8 * arr.dtype.itemsize - 1))
    elif arr.dtype.kind == "u":
        half = float(2 ** (8 * arr.dtype.itemsize - 1))
        arr = (arr.astype(np.float32) - half) / half
    return arr.astype(np.float32, copy=False)


def resample(x: np.ndarray, source_rate: int, target_rate: int) -> np.ndarray:
    """Resample a float32 [N] signal with torchaudio's band-limited (sinc) resampler.

    Its kernel grows with ``rate / gcd(source, target)``: 44101 -> 16000 Hz takes
    a minute. An odd source rate is therefore snapped to a multiple of 50 Hz
    first (a pitch error under 0.3% above 8 kHz); if the ratio is still awkward,
    linear interpolation is used.
    """
    if source_rate == target_rate or x.size == 0:
        return x
    src, dst = int(source_rate), int(target_rate)
    if max(src, dst) // math.gcd(src, dst) > _MAX_RATIO_TERM:
        src = max(50, round(src / 50) * 50)
    if src == dst:
        return x
    if max(src, dst) // math.gcd(src, dst) > _MAX_RATIO_TERM:
        n_out = int(round(x.size * dst / src))
        return np.interp(np.arange(n_out) * (src / dst), np.arange(x.size), x).astype(np.float32)
    import torch  # noqa: PLC0415 - heavy, only when needed

    with torch.no_grad():
        out = _resampler(src, dst)(torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32)))
    return out.numpy().astype(np.float32, copy=False)


@functools.lru_cache(maxsize=16)
def _resampler(source_rate: int, target_rate: int):  # -> torchaudio.transforms.Resample
    """torchaudio's resampler with its kernel built once per rate pair (3x faster than
    `torchaudio.functional.resample`, which rebuilds it on every call)."""
    import torchaudio.transforms as tat  # noqa: PLC0415

    return tat.Resample(source_rate, target_rate)


def _decode_pyav(container: av.container.InputContainer, n_bytes: int,
                 max_seconds: float) -> tuple[np.ndarray, dict] | None:
    """Decode the best audio stream to mono at its own rate, at most `max_seconds`."""
    stream = container.streams.best("audio")
    if stream is None:
        return None
    if stream.codec_context is None:
        raise RejectError("unsupported_codec", "no decoder for the audio stream's codec")
    rate = int(stream.rate or stream.codec_context.sample_rate or 0)
    if rate <= 0:
        raise RejectError("corrupt", "the audio stream declares no sample rate")
    declared = None
    if stream.duration and stream.time_base:
        declared = float(stream.duration * stream.time_base)
    elif container.duration:
        declared = container.duration / av.time_base
    check_declared_duration(declared)
    limit = int(math.ceil(max_seconds * rate))
    chunks: list[np.ndarray] = []
    total, channels, last_end, stopped = 0, 0, 0, False
    try:
        for packet in container.demux(stream):
            if packet.pos is not None and packet.pos >= 0:
                last_end = packet.pos + packet.size
            for frame in packet.decode():
                arr = _planar_float(frame)
                channels = max(channels, arr.shape[0])
                mono = arr.mean(axis=0)
                if frame.sample_rate and frame.sample_rate != rate:
                    mono = resample(mono, frame.sample_rate, rate)
                chunks.append(mono)
                total += mono.size
            if total >= limit:
                stopped = True
                break
    except av.error.EOFError:
        raise RejectError("truncated", "the audio stream ends early") from None
    except AV_ERRORS as exc:
        reason = "truncated" if last_end >= n_bytes - 64 else "corrupt"
        raise RejectError(reason, f"audio decoding failed: {exc}") from None
    x = np.concatenate(chunks) if chunks else np.zeros(0, np.float32)
    truncated = stopped and (total > limit or (declared or 0.0) > max_seconds + 1.0 / rate)
    x = x[:limit]
    decoded_s = x.size / rate
    duration = declared if truncated and declared and declared > decoded_s else decoded_s
    info = {"duration_s": float(duration), "truncated": bool(truncated), "source_rate": rate,
            "channels": int(channels or stream.channels or 1), "codec": stream.codec_context.name}
    return x, info


def check_declared_duration(seconds: float | None) -> None:
    """Reject ``absurd_duration`` when a header claims more than MAX_DECLARED_SECONDS."""
    if seconds is not None and seconds > MAX_DECLARED_SECONDS:
        raise RejectError("absurd_duration", f"the header claims {seconds:.3g} s (more than "
                                             f"{MAX_DECLARED_SECONDS // 86_400} days): the file is damaged")


def _decode_soundfile(data: bytes, max_seconds: float) -> tuple[np.ndarray, dict] | None:
    """Fallback for data FFmpeg does not recognise; None if soundfile cannot read it either."""
    import soundfile as sf  # noqa: PLC0415

    try:
        with sf.SoundFile(io.BytesIO(data)) as f:
            rate, channels, frames = int(f.samplerate), int(f.channels), int(f.frames)
            limit = int(math.ceil(max_seconds * rate))
            x = f.read(frames=min(frames, limit) if frames > 0 else limit, dtype="float32", always_2d=True)
    except (RuntimeError, ValueError, TypeError, OSError, sf.LibsndfileError):
        return None
    truncated = frames > limit
    info = {"duration_s": (frames if truncated else len(x)) / rate, "truncated": truncated,
            "source_rate": rate, "channels": channels, "codec": "soundfile"}
    return x.mean(axis=1).astype(np.float32), info


def _finish(x: np.ndarray, info: dict, sample_rate: int, max_seconds: float) -> tuple[np.ndarray, dict]:
    """Check the samples, resample to `sample_rate`, cut at `max_seconds`, clip to [-1, 1]."""
    if x.size == 0:
        raise RejectError("empty_audio", "the audio stream has no samples")
    if not MIN_RATE <= info["source_rate"] <= MAX_RATE:
        raise RejectError("bad_sample_rate", f"sample rate {info['source_rate']} Hz is outside "
                                             f"{MIN_RATE}..{MAX_RATE} Hz")
    if not np.isfinite(x).all():
        bad = int((~np.isfinite(x)).sum())
        raise RejectError("non_finite_values", f"{bad} of {x.size} samples are NaN or infinite")
    x = resample(x, info["source_rate"], sample_rate)[: int(math.floor(max_seconds * sample_rate))]
    return np.clip(x, -1.0, 1.0).astype(np.float32, copy=False), info


def open_container(data: bytes) -> av.container.InputContainer:
    """Open media bytes with PyAV (header only) or raise ``truncated`` / ``corrupt``."""
    try:
        return av.open(io.BytesIO(data), mode="r", metadata_errors="ignore")
    except av.error.EOFError:
        raise RejectError("truncated", "the data ends before the container header is complete") from None
    except AV_ERRORS as exc:
        raise RejectError("corrupt", f"not a readable media container: {exc}") from None


def decode_audio_track(data: bytes, *, sample_rate: int, max_seconds: float) -> tuple[np.ndarray, dict] | None:
    """Decode the audio track of a media container (e.g. a video): None if it has none.

    Same output and reject reasons as `decode_audio`.
    """
    with open_container(data) as container:
        decoded = _decode_pyav(container, len(data), max_seconds)
    return None if decoded is None else _finish(*decoded, sample_rate, max_seconds)


def decode_audio(data: bytes, *, sample_rate: int, max_seconds: float) -> tuple[np.ndarray, dict]:
    """Decode an audio file to mono float32 [N] in [-1, 1] at `sample_rate`.

    Returns the samples and ``{"duration_s", "truncated", "source_rate",
    "channels", "codec"}``; `duration_s` is the source's declared duration when
    decoding stopped at `max_seconds` (``truncated=True``), else the decoded one.

    Reject reasons: ``empty_file``, ``truncated``, ``corrupt``, ``no_audio_stream``, ``absurd_duration``,
    ``unsupported_codec``, ``empty_audio``, ``bad_sample_rate``, ``non_finite_values``.
    """
    if not data:
        raise RejectError("empty_file", "the audio file is empty")
    if max_seconds <= 0 or sample_rate <= 0:
        raise ValueError("max_seconds and sample_rate must be positive")
    cut = container_truncated(data)
    if cut:
        raise RejectError("truncated", cut)
    try:
        container = open_container(data)
    except RejectError as exc:
        if exc.reason == "truncated":
            raise
        decoded = _decode_soundfile(data, max_seconds)
        if decoded is None:
            raise
        return _finish(*decoded, sample_rate, max_seconds)
    with container:
        decoded = _decode_pyav(container, len(data), max_seconds)
        if decoded is None:
            kinds = sorted({s.type for s in container.streams})
            raise RejectError("no_audio_stream", f"the file has no audio stream (streams: {kinds or 'none'})")
    return _finish(*decoded, sample_rate, max_seconds)
