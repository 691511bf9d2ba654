"""Video decoding: bytes -> frames sampled at a fixed rate, plus the audio track.

PyAV reads only the bytes given, with only the video demuxers (MP4/MOV, Matroska/WebM, GIF,
AVI) and no protocols (`decode.containers`). It reads the container header first
(streams, frame size, duration) so the pixel cap is enforced before any frame is decoded. Frames are decoded with PyAV
(sequentially, converting only the sampled frames); the audio track too
(decord's AudioReader leaks memory). Sampled frames are converted straight to the size the
caller will use (`short_side`: the tokenizer's and the stats' need), never held at their native
size: a tiny file declaring 4K frames costs a few 4K frames inside FFmpeg, not T of them in RGB.

decord is available as ``backend="decord"`` (PyAV takes over when decord cannot
read the data) but is not the default: its bundled FFmpeg crashes the whole
process (SIGSEGV) on some damaged files, e.g. one flipped byte in an MP4
sample table or an AVI frame, which a cheap PyAV demux pass catches only in
part. A crash would stop a run; a RejectError does not.

Sampling: target times ``k / fps_eff`` for ``k = 0, 1, ...`` below
``span = min(duration, max_seconds, max_frames / fps_eff)``, where
``fps_eff = min(fps, source fps)`` (frames are never duplicated to reach a
higher rate). Each target takes the last frame shown at that time. The audio
is cut at the same span.
"""
from __future__ import annotations

import io
import math
from dataclasses import dataclass

import av
import numpy as np

from dataengine.decode.audio import check_declared_duration, decode_audio_track
from dataengine.decode.containers import VIDEO_FORMATS, AV_ERRORS, Refused, container_truncated, open_container
from dataengine.errors import RejectError

VIDEO_EXTS = frozenset({".mp4", ".webm", ".avi", ".mov", ".mkv", ".m4v"})


@dataclass
class DecodedVideo:
    """Frames sampled at `fps` and the (optional) mono audio track."""

    frames: np.ndarray  # uint8 [T, H, W, 3]
    fps: float  # the sampled fps (<= the requested fps)
    duration_s: float  # the source's duration (not only the decoded span)
    audio: np.ndarray | None  # float32 [N] mono in [-1, 1]; None: no audio stream
    sample_rate: int  # of `audio`
    truncated: bool  # True when max_seconds / max_frames cut the video short
    width: int  # the stream's own frame size (before any `short_side` scaling)
    height: int


@dataclass
class _Probe:
    """What the container header says about its video stream."""

    width: int
    height: int
    source_fps: float
    duration_s: float | None


def _video_stream(container: av.container.InputContainer) -> av.VideoStream | None:
    """The first video stream that is not cover art (an MP3's or M4A's picture)."""
    for stream in container.streams.video:
        if not stream.disposition & av.stream.Disposition.attached_pic:
            return stream
    return None


def _check_packets(data: bytes) -> None:
    """Demux (without decoding) every video packet and compare with the header's frame count.

    A guard before decord, which crashes on some damaged sample tables; it
    does not catch every such file (damaged frames pass it).
    """
    with open_container(data, VIDEO_FORMATS) as container:
        stream = _video_stream(container)
        declared, count = int(stream.frames or 0), 0
        try:
            for packet in container.demux(stream):
                count += packet.size > 0
        except AV_ERRORS as exc:
            raise RejectError("corrupt", f"the video stream cannot be demuxed: {exc}") from None
    if declared and count != declared:
        raise RejectError("corrupt", f"the header declares {declared} video frames but the data holds {count}")


def _probe(data: bytes) -> _Probe:
    """Read the container header with PyAV; reject files with no real video stream."""
    try:
        container = open_container(data, VIDEO_FORMATS)
    except Refused as exc:
        kind, label = exc.found or (None, "")
        if kind == "image":
            raise RejectError("not_a_video", f"the file is {label}, a still picture, not a video") from None
        if kind == "audio":
            raise RejectError("no_video_stream", f"the file is {label}: no video stream") from None
        raise
    with container:
        stream = _video_stream(container)
        if stream is None:
            kinds = sorted({s.type for s in container.streams})
            raise RejectError("no_video_stream", f"the file has no video stream (streams: {kinds or 'none'})")
        if stream.codec_context is None:
            raise RejectError("unsupported_codec", "no decoder for the video stream's codec")
        rate = stream.average_rate or stream.base_rate or stream.guessed_rate
        duration = None
        if stream.duration and stream.time_base:
            duration = float(stream.duration * stream.time_base)
        elif container.duration:
            duration = container.duration / av.time_base
        check_declared_duration(duration)
        return _Probe(int(stream.codec_context.width or 0), int(stream.codec_context.height or 0),
                      float(rate) if rate else 0.0, duration)


def out_size(width: int, height: int, short_side: int | None) -> tuple[int, int]:
    """(width, height) of the converted frames: scaled down (never up) so the shorter side is at
    most `short_side`, the aspect ratio kept; the native size when `short_side` is None."""
    if not short_side or width <= 0 or height <= 0 or min(width, height) <= short_side:
        return width, height
    scale = short_side / min(width, height)
    return max(1, round(width * scale)), max(1, round(height * scale))


def _targets(span: float, fps: float, max_frames: int) -> np.ndarray:
    """Sample times k / fps below `span`, at most `max_frames` of them."""
    count = min(max_frames, max(1, math.ceil(span * fps - 1e-6)))
    return np.arange(count, dtype=np.float64) / fps


def _pick(starts: np.ndarray, targets: np.ndarray) -> np.ndarray:
    """Index of the last frame starting at or before each target time."""
    return np.clip(np.searchsorted(starts, targets + 1e-6, side="right") - 1, 0, len(starts) - 1)


@dataclass
class _Frames:
    """Sampled frames and how much of the video they cover."""

    frames: np.ndarray  # uint8 [T, H, W, 3]
    fps: float  # the effective sampling rate
    span: float  # seconds covered by the samples
    length: float  # seconds of video in the stream (as far as it was read)
    capped: bool  # max_seconds / max_frames stopped sampling before the end


def _frames_decord(data: bytes, fps: float, max_seconds: float, max_frames: int,
                   size: tuple[int, int]) -> _Frames | None:
    """Frames via decord at `size` (width, height); None if decord cannot read the data."""
    import torch  # noqa: F401, PLC0415 - must be imported before decord
    import decord  # noqa: PLC0415

    try:
        reader = decord.VideoReader(io.BytesIO(data), ctx=decord.cpu(0), width=size[0], height=size[1])
        count = len(reader)
        if count == 0:
            return None
        stamps = np.asarray(reader.get_frame_timestamp(np.arange(count)), dtype=np.float64)
        starts = stamps[:, 0] - stamps[0, 0]
        source_fps = float(reader.get_avg_fps() or 0.0)
        fps_eff = min(fps, source_fps) if source_fps > 0 else fps
        length = float(stamps[-1, 1] - stamps[0, 0])
        if length <= 0 and source_fps > 0:
            length = count / source_fps
        span = min(length, max_seconds, max_frames / fps_eff)
        indices = _pick(starts, _targets(span, fps_eff, max_frames))
        frames = reader.get_batch(indices.tolist()).asnumpy()
    except (decord.DECORDError, RuntimeError, ValueError, IndexError):
        return None
    return _Frames(frames, fps_eff, span, length, capped=span < length - 1e-3)


def _frames_pyav(data: bytes, fps: float, max_seconds: float, max_frames: int, max_pixels: int,
                 probe: _Probe, short_side: int | None) -> _Frames:
    """Frames via sequential PyAV decoding; only the sampled frames are converted to RGB, at
    `out_size` of the first frame (all alike, should the stream change resolution midway)."""
    fps_eff = min(fps, probe.source_fps) if probe.source_fps > 0 else fps
    frame_s = 1.0 / (probe.source_fps or fps_eff)
    span = min(max_seconds, max_frames / fps_eff, probe.duration_s or math.inf)
    targets = _targets(span, fps_eff, max_frames)
    picked: list[np.ndarray] = []
    size: tuple[int, int] | None = None  # (width, height) of the output frames
    prev, prev_rgb, start, t, stopped, shown_s = None, None, None, 0.0, False, frame_s
    with open_container(data, VIDEO_FORMATS) as container:
        stream = _video_stream(container)
        stream.thread_type = "AUTO"
        try:
            for i, frame in enumerate(container.decode(stream)):
                if frame.width * frame.height > max_pixels:
                    raise RejectError("too_many_pixels", f"a {frame.width}x{frame.height} frame is more "
                                                         f"than {max_pixels} pixels")
                time = frame.time if frame.time is not None else i * frame_s
                start = time if start is None else start
                t = time - start
                if frame.duration and frame.time_base:  # how long this frame is shown
                    shown_s = float(frame.duration * frame.time_base)
                # every target before this frame's start shows the previous frame
                while prev is not None and len(picked) < len(targets) and targets[len(picked)] < t - 1e-6:
                    if prev_rgb is None:
                        size = size or out_size(prev.width, prev.height, short_side)
                        prev_rgb = prev.to_ndarray(width=size[0], height=size[1], format="rgb24")
                    picked.append(prev_rgb)
                if t >= span - 1e-6:  # there is video at or after the span's end
                    stopped = True
                    break
                prev, prev_rgb = frame, None
        except AV_ERRORS as exc:  # damage after some frames: keep those, the length check decides
            if prev is None:
                raise RejectError("corrupt", f"cannot decode video frames: {exc}") from None
        if prev is not None and prev_rgb is None:
            size = size or out_size(prev.width, prev.height, short_side)
            prev_rgb = prev.to_ndarray(width=size[0], height=size[1], format="rgb24")
    if prev_rgb is None:
        raise RejectError("no_frames", "the video stream has no decodable frames")
    length = t + shown_s
    declared = probe.duration_s
    if not stopped and declared and length + max(1.0, 0.1 * declared) < declared:
        raise RejectError("corrupt", f"the video stream ends at {length:.2f} s but its header "
                                     f"declares {declared:.2f} s: frames are missing or undecodable")
    if not stopped:  # the stream ended: targets up to its end show the last frame
        span = min(span, length)
        picked.extend(prev_rgb for _ in range(len(_targets(span, fps_eff, max_frames)) - len(picked)))
    return _Frames(np.stack(picked), fps_eff, span, length, capped=stopped)


def decode_video(data: bytes, *, fps: float, max_seconds: float, max_frames: int,
                 max_pixels: int, sample_rate: int, backend: str = "pyav",
                 short_side: int | None = None) -> DecodedVideo:
    """Decode a video: frames sampled at `fps` (see the module doc) and its audio track.

    `short_side`: frames are converted scaled down so their shorter side is at most this
    (`out_size`); None keeps the native size (`max_pixels` bounds it).

    `backend` picks the frame decoder: "pyav" (default, safe on damaged data)
    or "decord" (random access; falls back to PyAV when it cannot read the data).

    Reject reasons: ``empty_file``, ``truncated``, ``corrupt``, ``unsupported_container`` (a playlist, an
    SDP file or a URL: `decode.containers`), ``not_a_video``,
    ``no_video_stream``, ``unsupported_codec``, ``too_many_pixels``, ``absurd_duration``, ``no_frames``, and the audio
    track's (``truncated``, ``corrupt``, ``unsupported_codec``, ``non_finite_values``; detail starts
    with "audio track:"). An audio stream with no samples gives ``audio=None``.
    """
    if not data:
        raise RejectError("empty_file", "the video file is empty")
    if fps <= 0 or max_seconds <= 0 or max_frames <= 0:
        raise ValueError("fps, max_seconds and max_frames must be positive")
    cut = container_truncated(data)
    if cut:
        raise RejectError("truncated", cut)
    probe = _probe(data)
    if probe.width * probe.height > max_pixels:
        raise RejectError("too_many_pixels",
                          f"{probe.width}x{probe.height} frames are more than {max_pixels} pixels")
    sampled = None
    if backend == "decord":
        _check_packets(data)
        size = out_size(probe.width, probe.height, short_side) if probe.width > 0 < probe.height else (-1, -1)
        sampled = _frames_decord(data, fps, max_seconds, max_frames, size)  # -1: decord's native size
    elif backend != "pyav":
        raise ValueError(f"backend must be 'pyav' or 'decord', got {backend!r}")
    if sampled is None:
        sampled = _frames_pyav(data, fps, max_seconds, max_frames, max_pixels, probe, short_side)
    frames = sampled.frames
    if frames.ndim != 4 or frames.shape[0] == 0 or frames.shape[-1] != 3:
        raise RejectError("no_frames", f"decoded frames have shape {frames.shape}")
    if frames.shape[1] * frames.shape[2] > max_pixels:
        raise RejectError("too_many_pixels", f"decoded frames are {frames.shape[2]}x{frames.shape[1]}")
    try:
        track = decode_audio_track(data, sample_rate=sample_rate, max_seconds=sampled.span, formats=VIDEO_FORMATS)
    except RejectError as exc:
        if exc.reason != "empty_audio":
            raise RejectError(exc.reason, f"audio track: {exc.detail}") from None
        track = None  # an audio stream without samples: no audio
    return DecodedVideo(
        frames=np.ascontiguousarray(frames, dtype=np.uint8),
        fps=float(sampled.fps),
        duration_s=float(probe.duration_s or sampled.length),
        audio=None if track is None else track[0],
        sample_rate=int(sample_rate),
        truncated=bool(sampled.capped),
        width=int(probe.width or frames.shape[2]),
        height=int(probe.height or frames.shape[1]),
    )
