"""Per-item quality stats, computed once at decode time (stats first, thresholds second).

Each stat is a flat, modality-prefixed name in `STAT_FIELDS`. The decode stage
stores an item's stats as a JSON object (absent key = null) computed on the
FULL-resolution decode, before the resize to the tokenizer's size; the
tokenize stage adds the ``token_*`` stats from `token_stats`. Filters read the
stats back as typed columns (`stats_table`) and apply the recipe's thresholds,
so changing a threshold never re-decodes.

Text stats are for text documents and records (kinds text and chat; a chat is
measured on its message contents joined by newlines). Captions, transcripts
and labels of media items are not measured: they are judged with their media.
"""
from __future__ import annotations

import hashlib
import io
import json
import math
import unicodedata
import warnings

import numpy as np
import pyarrow as pa

from dataengine.curate.stats_audio import audio_stats
from dataengine.curate.stats_text import text_stats
from dataengine.curate.stats_visual import image_stats, video_stats

F, B, S = pa.float64(), pa.bool_(), pa.string()
STAT_FIELDS: dict[str, pa.DataType] = {
    # every file-backed item
    "media_bytes": F,            # size of the media file, bytes (for one content, more bytes = less lossy)
    # image (blur/colourfulness/entropy at the fixed analysis size, longest side 512 px)
    "image_width": F,            # decoded width, px
    "image_height": F,           # decoded height, px
    "image_aspect": F,           # width / height
    "image_blur": F,             # variance of the 4-neighbour Laplacian of grey 0..255; LOW = blurry
    "image_colorfulness": F,     # Hasler & Suesstrunk M on 0..255 RGB; 0 = grey, ~100+ = vivid
    "image_entropy": F,          # grey-level histogram entropy, bits (0..8); low = flat/blank
    # video (frames as sampled by the decoder; motion/black/frozen at longest side 128 px)
    "video_duration_s": F,       # source duration, s
    "video_fps": F,              # rate of the sampled frames, frames/s
    "video_width": F,            # frame width, px
    "video_height": F,           # frame height, px
    "video_motion": F,           # mean abs difference of consecutive sampled grey frames, 0..1
    "video_black_ratio": F,      # fraction of sampled frames >= 98% pixels below 10% grey (ffmpeg blackdetect)
    "video_frozen_ratio": F,     # fraction of consecutive frame pairs with mean abs difference < 0.002
    "video_has_audio": B,        # the container has a non-empty audio track
    # audio (mono at the decode sample rate)
    "audio_duration_s": F,       # source duration, s
    "audio_rms_dbfs": F,         # RMS level, dB re full scale (-120 = digital silence)
    "audio_silence_ratio": F,    # fraction of 20 ms frames below -50 dBFS
    "audio_clipping_ratio": F,   # fraction of samples at |x| >= 0.999 in runs of >= 2 samples
    "audio_speech_ratio": F,     # fraction of 32 ms chunks with speech probability > 0.5
    "audio_vad": S,              # method behind audio_speech_ratio: "silero-vad-<version>-16k" or "energy"
    # sensor
    "sensor_length": F,          # rows in the source recording
    "sensor_rate_hz": F,         # source sampling rate, Hz
    "sensor_duration_s": F,      # source duration, s
    "sensor_channels": F,        # channels (columns besides time), count
    "sensor_nan_ratio": F,       # fraction of source values that were NaN/inf (before filling)
    "sensor_flat_ratio": F,      # fraction of channels with ~zero variance (std <= 1e-6 x max(1, mean |x|))
    # text (kinds text and chat; Gopher rules, Rae et al. 2021; words = whitespace tokens)
    "text_chars": F,             # length, Unicode characters
    "text_words": F,             # whitespace-separated words, count
    "text_mean_word_len": F,     # mean characters per word
    "text_symbol_ratio": F,      # max(# count, ellipsis count) per word
    "text_non_alpha_ratio": F,   # fraction of words with no alphabetic character
    "text_dup_line_ratio": F,    # fraction of non-empty lines repeating an earlier line
    "text_dup_line_char_ratio": F,  # fraction of line characters in those repeated lines
    "text_top_2gram_ratio": F,   # fraction of word characters covered by the most frequent 2-gram
    "text_top_3gram_ratio": F,   # same, 3-gram
    "text_top_4gram_ratio": F,   # same, 4-gram
    "text_dup_ngram_ratio": F,   # fraction of word characters covered by repeated 5-grams
    "text_dup_10gram_ratio": F,  # same, 10-grams
    "text_lang": S,              # ISO 639 language code guessed by py3langid
    "text_lang_score": F,        # its probability, 0..1
    # tokenizer-derived (every modality; merged in by the tokenize stage)
    "token_unique_ratio": F,     # distinct codes / codes in the item's media span
    "token_codebook_usage": F,   # distinct codes / codebook size
    "token_recon_mse": F,        # reconstruction MSE at the tokenizer's resolution (null: it does not decode)
}
STATS_SCHEMA = pa.schema([pa.field(k, t) for k, t in STAT_FIELDS.items()])
FLAT_STD = 1e-6  # relative std under which a sensor channel is flat


def sensor_stats(values_TC: np.ndarray, rate_hz: float, nan_ratio: float | None) -> dict:
    """Length, rate, NaN and flat-channel ratios of a recording (float [T, C] at `rate_hz`).

    `nan_ratio` is the non-finite fraction BEFORE filling (None: computed from `values_TC`).
    """
    v = np.asarray(values_TC, dtype=np.float64)
    if v.ndim == 1:
        v = v[:, None]
    if v.ndim != 2:
        raise ValueError(f"expected sensor values [T, C], got shape {v.shape}")
    finite = np.isfinite(v)
    if nan_ratio is None:
        nan_ratio = float(1.0 - finite.mean()) if v.size else 0.0
    out = {"sensor_length": float(v.shape[0]), "sensor_rate_hz": float(rate_hz),
           "sensor_channels": float(v.shape[1]), "sensor_nan_ratio": float(nan_ratio)}
    if rate_hz > 0:
        out["sensor_duration_s"] = max(0, v.shape[0] - 1) / float(rate_hz)
    if v.size:
        x = np.where(finite, v, np.nan)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)  # an all-NaN channel: nan std, counted as flat below
            std_C, scale_C = np.nanstd(x, axis=0), np.nanmean(np.abs(x), axis=0)
        flat_C = ~(std_C > FLAT_STD * np.maximum(1.0, np.nan_to_num(scale_C)))
        out["sensor_flat_ratio"] = float(flat_C.mean())
    return out


def token_stats(codes: np.ndarray, codebook_size: int, recon_mse: float | None) -> dict:
    """Unique-code ratio and codebook usage of one item's media codes, plus its reconstruction MSE."""
    codes = np.asarray(codes).reshape(-1)
    out: dict = {}
    if codes.size:
        unique = len(np.unique(codes))
        out["token_unique_ratio"] = unique / codes.size
        if codebook_size > 0:
            out["token_codebook_usage"] = unique / codebook_size
    if recon_mse is not None and math.isfinite(recon_mse):
        out["token_recon_mse"] = float(recon_mse)
    return out


def item_stats(kind: str, arrays: dict, meta: dict) -> dict:
    """The stats of one decoded item, keys from STAT_FIELDS (absent = null), JSON-ready values.

    `arrays` are the FULL-resolution decoded arrays; `meta` what else each kind needs:
    image {"image"}; video {"frames"} + fps, duration_s, has_audio (width/height default to
    the frames'); audio {"audio"} + sample_rate (duration_s: the source's, when decoding
    stopped early); sensor {"sensor"} + rate_hz, and nan_ratio or filled_non_finite +
    source_rows (+ source_rate_hz); text: meta["text"]; chat: meta["messages"].
    """
    if kind == "image":
        out = image_stats(arrays["image"])
    elif kind == "video":
        out = video_stats(arrays["frames"], meta["fps"], meta["duration_s"], bool(meta.get("has_audio")),
                          meta.get("width"), meta.get("height"))
    elif kind == "audio":
        out = audio_stats(arrays["audio"], int(meta["sample_rate"]))
        if meta.get("duration_s") is not None:
            out["audio_duration_s"] = float(meta["duration_s"])
    elif kind == "sensor":
        out = _sensor_item(arrays["sensor"], meta)
    elif kind == "text":
        out = text_stats(meta["text"])
    elif kind == "chat":
        out = text_stats("\n".join(m["content"] for m in meta["messages"]))
    else:
        raise ValueError(f"unknown kind {kind!r}: expected image, video, audio, sensor, text or chat")
    return clean_stats(out)


def _sensor_item(values_TC: np.ndarray, meta: dict) -> dict:
    channels = values_TC.shape[1] if values_TC.ndim == 2 else 1
    rows = meta.get("source_rows")
    nan_ratio = meta.get("nan_ratio")
    if nan_ratio is None and rows and meta.get("filled_non_finite") is not None:
        nan_ratio = meta["filled_non_finite"] / (rows * channels)
    out = sensor_stats(values_TC, float(meta["rate_hz"]), nan_ratio)
    if rows:  # describe the source recording, not its resampling to the tokenizer's rate
        rate = float(meta.get("source_rate_hz") or meta["rate_hz"])
        out.update(sensor_length=float(rows), sensor_rate_hz=rate)
        if meta.get("duration_s") is not None:
            out["sensor_duration_s"] = float(meta["duration_s"])
    return out


def clean_stats(stats: dict) -> dict:
    """Plain-Python values of STAT_FIELDS' types; None and non-finite numbers dropped (null)."""
    out = {}
    for key, value in stats.items():
        kind = STAT_FIELDS.get(key)
        if kind is None:
            raise KeyError(f"{key!r} is not in STAT_FIELDS; declare it there (name, type, unit)")
        if value is None:
            continue
        if kind == F:
            value = float(value)
            if not math.isfinite(value):
                continue
        out[key] = bool(value) if kind == B else str(value) if kind == S else value
    return out


def stats_json(stats: dict) -> str:
    """The `stats` column's JSON text of one item (sorted keys, strict JSON)."""
    return json.dumps(clean_stats(stats), sort_keys=True, allow_nan=False)


def stats_table(stats_column: list[str] | pa.Array | pa.ChunkedArray) -> pa.Table:
    """Typed columns (STATS_SCHEMA) from a column of stats JSON strings, one row per string."""
    import pyarrow.json as pj  # noqa: PLC0415

    values = stats_column.to_pylist() if isinstance(stats_column, (pa.Array, pa.ChunkedArray)) else stats_column
    if not values:
        return STATS_SCHEMA.empty_table()
    data = "\n".join(v if v else "{}" for v in values).encode()
    opts = pj.ParseOptions(explicit_schema=STATS_SCHEMA, unexpected_field_behavior="error")
    return pj.read_json(io.BytesIO(data), parse_options=opts).select(STATS_SCHEMA.names)


def content_hash(arrays: dict[str, np.ndarray] | None = None, text: str | None = None) -> str:
    """sha256 hex of a decoded payload: each array's name, dtype, shape and bytes (sorted by
    name), or the NFC-normalised text. Same pixels/samples -> same hash, whatever the file."""
    h = hashlib.sha256()
    if text is not None:
        h.update(b"text\0" + unicodedata.normalize("NFC", text).encode("utf-8", "surrogatepass"))
    for name in sorted(arrays or {}):
        a = np.ascontiguousarray(arrays[name])
        h.update(f"{name}:{a.dtype.str}:{a.shape}\0".encode())
        h.update(a.reshape(-1).view(np.uint8) if a.size else b"")
    return h.hexdigest()


__all__ = ["STATS_SCHEMA", "STAT_FIELDS", "audio_stats", "clean_stats", "content_hash", "image_stats",
           "item_stats", "sensor_stats", "stats_json", "stats_table", "text_stats", "token_stats", "video_stats"]
