"""Decoders: raw bytes of one file -> arrays per modality.

Every decoder takes `bytes` and raises `dataengine.errors.RejectError(reason,
detail)` for bad input; no library exception escapes for bad data. Heavy
libraries (torch, decord, torchaudio) are imported only when a video or an
audio resample needs them.
"""
from __future__ import annotations

from dataengine.decode.audio import AUDIO_EXTS, decode_audio, decode_audio_track
from dataengine.decode.image import IMAGE_EXTS, decode_image, square_resize
from dataengine.decode.source import read_input, split_member
from dataengine.decode.sensor import SENSOR_EXTS, SensorRecording, decode_sensor, parse_sidecar
from dataengine.decode.text import JSONL_EXTS, TEXT_EXTS, decode_jsonl, decode_text
from dataengine.decode.video import VIDEO_EXTS, DecodedVideo, decode_video

__all__ = [
    "AUDIO_EXTS",
    "IMAGE_EXTS",
    "JSONL_EXTS",
    "SENSOR_EXTS",
    "TEXT_EXTS",
    "VIDEO_EXTS",
    "DecodedVideo",
    "SensorRecording",
    "decode_audio",
    "decode_audio_track",
    "decode_image",
    "decode_jsonl",
    "decode_sensor",
    "decode_text",
    "decode_video",
    "parse_sidecar",
    "read_input",
    "split_member",
    "square_resize",
]
