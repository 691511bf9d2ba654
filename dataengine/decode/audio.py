"""Audio decoding: bytes -> mono float32 [N] in [-1, 1] at a target sample rate.

PyAV (bundled FFmpeg) decodes from memory, with only the audio demuxers and no
protocols (`decode.containers`); soundfile is the fallback for audio data FFmpeg
does not read (libsndfile follows no references either). Decoding stops once `max_seconds` are in hand, so
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

from dataengine.decode.containers import (
    AUDIO_FORMATS,
    AV_ERRORS,
    Refused,
    container_truncated,
    open_container,
)
from dataengine.errors import RejectError

AUDIO_EXTS = frozenset({".wav", ".flac", ".ogg", ".oga", ".opus", ".mp3", ".m4a", ".aac"})

MIN_RATE, MAX_RATE = 1_000, 384_000  # source sample rates outside this are damaged headers
MAX_DECLARED_SECONDS = 7 * 86_400  # a header claiming more than a week of media is damaged or hostile
_MAX_RATIO_TERM = 1_000  # largest rate / gcd(source, target) handed to torchaudio


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


def check_wav_header(data: bytes) -> None:
    """Reject a RIFF/WAVE header whose fields contradict themselves (``bad_header``): 0 channels,
    a zero block size, or a data chunk larger than the RIFF that holds it. The sizes 0 and
    0xFFFFFFFF are the streaming convention for "length unknown" and are accepted."""
    if data[:4] != b"RIFF" or data[8:12] != b"WAVE":
        return
    riff = int.from_bytes(data[4:8], "little")
    end = riff + 8 if riff not in (0, 0xFFFFFFFF) else len(data)
    pos = 12
    for _ in range(1000):  # chunks before "data"; more is not a WAV header
        if pos + 8 > len(data):
            return
        kind, size = data[pos:pos + 4], int.from_bytes(data[pos + 4:pos + 8], "little")
        if kind == b"fmt " and size >= 16 and pos + 24 <= len(data):
            channels = int.from_bytes(data[pos + 10:pos + 12], "little")
            block = int.from_bytes(data[pos + 20:pos + 22], "little")
            if channels == 0 or block == 0:
                raise RejectError("bad_header", f"the WAV header declares {channels} channels and "
                                                f"{block}-byte sample frames")
        if kind == b"data":
            if size not in (0, 0xFFFFFFFF) and pos + 8 + size > end:
                raise RejectError("bad_header", f"the WAV data chunk declares {size} bytes but the RIFF "
                                                f"holds {end - pos - 8} after it")
            return
        pos += 8 + size + (size & 1)
    raise RejectError("bad_header", "more than 1000 chunks before the WAV data")


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


def decode_audio_track(data: bytes, *, sample_rate: int, max_seconds: float,
                       formats: tuple[str, ...]) -> tuple[np.ndarray, dict] | None:
    """Decode the audio track of a media container (e.g. a video, whose demuxers are `formats`):
    None if it has none. Same output and reject reasons as `decode_audio`.
    """
    with open_container(data, formats) as container:
        decoded = _decode_pyav(container, len(data), max_seconds)
    return None if decoded is None else _finish(*decoded, sample_rate, max_seconds)


def decode_audio(data: bytes, *, sample_rate: int, max_seconds: float) -> tuple[np.ndarray, dict]:
    """Decode an audio file to mono float32 [N] in [-1, 1] at `sample_rate`.

    Returns the samples and ``{"duration_s", "truncated", "source_rate",
    "channels", "codec"}``; `duration_s` is the source's declared duration when
    decoding stopped at `max_seconds` (``truncated=True``), else the decoded one.

    Reject reasons: ``empty_file``, ``truncated``, ``corrupt``, ``unsupported_container`` (a playlist, an SDP
    file, a URL or a video container: `decode.containers`), ``bad_header`` (`check_wav_header`),
    ``no_audio_stream``, ``absurd_duration``,
    ``unsupported_codec``, ``empty_audio``, ``bad_sample_rate``, ``non_finite_values``.
    """
    if not data:
        raise RejectError("empty_file", "the audio file is empty")
    if max_seconds <= 0 or sample_rate <= 0:
        raise ValueError("max_seconds and sample_rate must be positive")
    cut = container_truncated(data)
    if cut:
        raise RejectError("truncated", cut)
    check_wav_header(data)
    try:
        container = open_container(data, AUDIO_FORMATS)
    except Refused as exc:
        kind, label = exc.found or (None, "")
        if kind == "image":
            raise RejectError("no_audio_stream", f"the file is {label}: a picture (one video stream), "
                                                 "no audio stream") from None
        if kind == "video":
            raise RejectError("unsupported_container", f"the file is {label}, not one of the audio formats "
                                                       f"({', '.join(AUDIO_FORMATS)}); name it .mp4/.mkv/.avi "
                                                       "to decode it as a video") from None
        decoded = _decode_soundfile(data, max_seconds)  # libsndfile reads only the bytes given, too
        if decoded is None:
            raise
        return _finish(*decoded, sample_rate, max_seconds)
    with container:
        decoded = _decode_pyav(container, len(data), max_seconds)
        if decoded is None:
            kinds = sorted({s.type for s in container.streams})
            raise RejectError("no_audio_stream", f"the file has no audio stream (streams: {kinds or 'none'})")
    return _finish(*decoded, sample_rate, max_seconds)
