"""Audio: mono waveforms at the recipe's sample rate (a video's own soundtrack travels with its frames)."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa

from dataengine.curate.stats_audio import audio_stats
from dataengine.decode.audio import AUDIO_EXTS, decode_audio
from dataengine.errors import RecipeError
from dataengine.evaluate.audio import evaluate_audio, log_mel
from dataengine.mediaio import write_audio
from dataengine.modalities.spec import DecodeContext, Decoded, Modality

F, S = pa.float64(), pa.string()


@dataclass
class AudioDecode:
    sample_rate: int = 16_000  # the audio tokenizer's rate; must match it
    max_seconds: float = 30.0


def decode(data: bytes, path: str, sidecar: dict | None, meta: dict, ctx: DecodeContext) -> Decoded:
    c = ctx.config.audio
    wave, info = decode_audio(data, sample_rate=c.sample_rate, max_seconds=c.max_seconds)
    meta.update(info)
    return Decoded({"audio": wave}, {"audio": wave}, {"sample_rate": c.sample_rate,
                                                      "duration_s": info.get("duration_s")})


def stats(full: dict, smeta: dict) -> dict:
    out = audio_stats(full["audio"], int(smeta["sample_rate"]))
    if smeta.get("duration_s") is not None:  # the source's, when decoding stopped early
        out["audio_duration_s"] = float(smeta["duration_s"])
    return out


def mel_mse(original: np.ndarray, decoded: np.ndarray, tok) -> float:
    """MSE of the log-mel of the eval transform (phase-free: Griffin-Lim decoders are not charged for phase)."""
    sr = int(tok.params["sample_rate"])
    ma, mb = log_mel(original, sr), log_mel(decoded, sr)
    n = min(ma.shape[-1], mb.shape[-1])
    return float(np.mean((ma[:, :n].astype(np.float64) - mb[:, :n]) ** 2))


def write_decoded(stem: Path, value, side: dict, meta: dict, tok) -> Path:
    return write_audio(stem.with_suffix(".wav"), np.asarray(value, dtype=np.float32), int(tok.params["sample_rate"]))


def check_recipe(r, where: str) -> None:
    audio = r.tokenizers.get("audio")
    rate = audio.params.get("sample_rate") if audio is not None else None
    if rate is not None and rate != r.decode.audio.sample_rate:
        raise RecipeError(f"{where}: decode.audio.sample_rate={r.decode.audio.sample_rate} differs from "
                          f"tokenizers.audio.params.sample_rate={rate}; set both to the same rate")


SPEC = Modality(
    name="audio", array="audio", extensions=tuple(sorted(AUDIO_EXTS)),
    markers=("<|audio_start|>", "<|audio_end|>"), in_vocab_v1=True, paired_text="transcript",
    tasks=("audio_to_transcript", "transcript_to_audio", "instruct", "audio"),
    default_tasks={"audio_to_transcript": 0.4, "transcript_to_audio": 0.4, "instruct": 0.2},
    templates=("Transcribe this audio.", "What is being said in this recording?",
               "Write down the words spoken in this clip."),
    carried_by=("video",), interleavable=True, ngram=2, threshold=0.5,
    stat_fields={
        "audio_duration_s": F,       # source duration, s
        "audio_rms_dbfs": F,         # RMS level, dB re full scale (-120 = digital silence)
        "audio_silence_ratio": F,    # fraction of 20 ms frames below -50 dBFS
        "audio_clipping_ratio": F,   # fraction of samples at |x| >= 0.999 in runs of >= 2 samples
        "audio_speech_ratio": F,     # fraction of 32 ms chunks with speech probability > 0.5
        "audio_vad": S,              # method behind audio_speech_ratio: "silero-vad-<version>-16k" or "energy"
    },
    decode_config=AudioDecode, decode=decode, stats=stats, fit_items=lambda arr: {"audio": [arr]},
    recon_mse=mel_mse, recon_unit="log-mel MSE", write_decoded=write_decoded,
    evaluate=evaluate_audio,
    eval_keys=("mel_l1", "baseline_mel_l1", "griffinlim_mel_l1", "tokens_per_second", "utilization", "perplexity"),
    eval_resources=lambda d: {"audio_sample_rate": d.audio.sample_rate},
    check_recipe=check_recipe, color="#72b7b2",
)
