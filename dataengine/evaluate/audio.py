"""Audio tokenizer eval: log-mel distance against a same-bits coarse mel.

One fixed transform measures everything: a torchaudio ``MelSpectrogram`` at the
tokenizer's sample rate (n_fft 1024, hop 256, 64 mels, power 2, centred) and
``log(mel + 1e-5)``. ``mel_l1`` is the mean absolute difference of that log-mel
between the original wave and the tokenizer's decoded wave (waveform domain, so
every family, EnCodec included, is measured the same way).

Baseline (the same bits, no learning): a clip's tokens carry
``bits = n_tokens * log2(codebook)`` (the bits/s are ``tokens_per_second *
log2(codebook)``). The baseline stores the clip's log-mel area-downsampled to
``m`` mel bins x ``t`` frames, uniformly quantised to 8 bits between its min and
max (two float32) plus one byte naming ``m``: ``72 + 8*m*t <= bits``. Of the
shapes that fit (m in 1, 2, 4, ... 64, t as large as the bits allow) the encoder
keeps the one with the smallest log-mel error. The decoder upsamples it
(bilinear) and inverts it with the SAME path as `mel_fsq` decoding
(InverseMelScale + 32 Griffin-Lim iterations, seeded phase); the resulting wave
is measured with the same transform: ``baseline_mel_l1``.
``griffinlim_mel_l1`` is the floor that inversion alone costs (the exact log-mel
through the same path).
"""
from __future__ import annotations

import math
from functools import lru_cache
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
import torchaudio.transforms as TT

from dataengine.evaluate.metrics import code_stats, token_bits

N_FFT, HOP, N_MELS = 1024, 256, 64
LOG_EPS = 1e-5
GL_ITERS = 32
HEADER_BITS = 72  # min and max as float32 + one byte for the mel-bin count
MEL_BIN_CHOICES = (1, 2, 4, 8, 16, 32, 64)


@lru_cache(maxsize=8)
def mel_transform(sample_rate: int) -> TT.MelSpectrogram:
    """The one eval mel transform for a sample rate (cached; never trained)."""
    return TT.MelSpectrogram(sample_rate=int(sample_rate), n_fft=N_FFT, hop_length=HOP,
                             n_mels=N_MELS, power=2.0, center=True)


@torch.inference_mode()
def log_mel(wave: np.ndarray, sample_rate: int) -> np.ndarray:
    """mono float32 [N] -> log(mel + 1e-5) [N_MELS, 1 + max(N, N_FFT) // HOP]."""
    x = torch.from_numpy(np.ascontiguousarray(wave, np.float32).reshape(-1))
    if len(x) < N_FFT:  # centred reflect padding needs a few samples
        x = F.pad(x, (0, N_FFT - len(x)))
    return torch.log(mel_transform(sample_rate)(x) + LOG_EPS).numpy()


def mel_l1(a: np.ndarray, b: np.ndarray) -> float:
    """Mean absolute difference of two log-mels [M,T] (over their common frames)."""
    T = min(a.shape[-1], b.shape[-1])
    return float(np.mean(np.abs(np.asarray(a[:, :T], np.float64) - b[:, :T])))


def coarse_mel_bits(m: int, t: int) -> int:
    """Bits of a coarse log-mel of m bins x t frames: header + one byte per cell."""
    return HEADER_BITS + 8 * int(m) * int(t)


def coarse_mel_shapes(bits: float, n_mels: int, n_frames: int) -> list[tuple[int, int]]:
    """Every (m bins, t frames) the baseline may store within `bits`, t as large as fits.

    Empty when the budget cannot hold the header and one cell.
    """
    cells = int(math.floor((bits - HEADER_BITS) / 8)) if bits >= HEADER_BITS else 0
    shapes = []
    for m in MEL_BIN_CHOICES:
        if m > n_mels:
            break
        t = min(int(n_frames), cells // m)
        if t >= 1:
            shapes.append((m, t))
    return shapes


def coarse_mel(logmel: np.ndarray, m: int, t: int) -> np.ndarray:
    """log-mel [M,T] -> area-downsampled [m,t] -> 8-bit uniform quantisation -> bilinear back to [M,T]."""
    x = torch.as_tensor(np.asarray(logmel, np.float32))[None, None]
    small = F.adaptive_avg_pool2d(x, (int(m), int(t)))
    lo, hi = float(small.min()), float(small.max())
    lo, hi = float(np.float32(lo)), float(np.float32(hi))  # stored as float32
    span = hi - lo
    q = torch.round((small - lo) / span * 255.0) if span > 0 else torch.zeros_like(small)
    deq = lo + q.clamp(0, 255) / 255.0 * span
    up = F.interpolate(deq, size=tuple(x.shape[-2:]), mode="bilinear", align_corners=False)
    return up[0, 0].numpy()


def coarse_mel_baseline(logmel: np.ndarray, bits: float) -> tuple[np.ndarray, int, tuple[int, int]]:
    """The best coarse log-mel within `bits` -> (log-mel [M,T], bits used, (m, t)).

    With no room for a cell: the clip's mean as one float32 (32 bits), or
    silence (0 bits) when even that does not fit.
    """
    M, T = logmel.shape
    shapes = coarse_mel_shapes(bits, M, T)
    if not shapes:
        if bits >= 32:
            return np.full_like(logmel, float(np.float32(logmel.mean()))), 32, (0, 0)
        return np.full_like(logmel, math.log(LOG_EPS)), 0, (0, 0)
    best = None
    for m, t in shapes:
        rec = coarse_mel(logmel, m, t)
        err = mel_l1(logmel, rec)
        if best is None or err < best[0]:
            best = (err, rec, coarse_mel_bits(m, t), (m, t))
    return best[1], best[2], best[3]


@torch.inference_mode()
def invert_log_mel(logmel: np.ndarray, sample_rate: int, length: int) -> np.ndarray:
    """log-mel [N_MELS,T] -> wave [length]: InverseMelScale + 32 Griffin-Lim iterations, phase seed 0.

    The same path as `mel_fsq` decoding, with the eval transform's settings.
    """
    logmel_MT = torch.as_tensor(np.asarray(logmel, np.float32))
    power_MT = (logmel_MT.exp() - LOG_EPS).clamp_min(0.0)
    inv = TT.InverseMelScale(n_stft=N_FFT // 2 + 1, n_mels=logmel_MT.shape[0], sample_rate=int(sample_rate))
    natural = (logmel_MT.shape[-1] - 1) * HOP
    gl = TT.GriffinLim(n_fft=N_FFT, hop_length=HOP, power=2.0, n_iter=GL_ITERS,
                       length=max(int(length), natural, N_FFT))
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        wave = gl(inv(power_MT).clamp_min(0.0))
    return wave[: int(length)].numpy().astype(np.float32)


def fit_length(wave: np.ndarray, n: int) -> np.ndarray:
    """Crop or zero-pad a mono wave to n samples."""
    w = np.asarray(wave, np.float32).reshape(-1)[:n]
    return np.pad(w, (0, n - len(w))) if len(w) < n else w


def evaluate_audio(tokenizer: Any, items: list[np.ndarray], rt: dict, resources: dict) -> dict:
    """Metrics of an audio tokenizer from a `metrics.roundtrip` result `rt` over `items`."""
    sr = int(tokenizer.params.get("sample_rate") or resources["audio_sample_rate"])
    levels = tokenizer.level_sizes()
    l1, base_l1, gl_l1, tok_bits, base_bits, seconds, n_tokens = [], [], [], [], [], [], []
    for wave, codes, dec in zip(items, rt["codes"], rt["decoded"], strict=True):
        wave = np.asarray(wave, np.float32).reshape(-1)
        n = len(wave)
        ref = log_mel(wave, sr)
        l1.append(mel_l1(ref, log_mel(fit_length(dec, n), sr)))
        bits = token_bits(int(codes.size), levels)
        coarse, used, _ = coarse_mel_baseline(ref, bits)
        base_l1.append(mel_l1(ref, log_mel(invert_log_mel(coarse, sr, n), sr)))
        gl_l1.append(mel_l1(ref, log_mel(invert_log_mel(ref, sr, n), sr)))
        tok_bits.append(bits)
        base_bits.append(used)
        seconds.append(n / sr)
        n_tokens.append(int(codes.size))
    total_s = sum(seconds)
    return {
        "mel_l1": float(np.mean(l1)),
        "baseline_mel_l1": float(np.mean(base_l1)),
        "griffinlim_mel_l1": float(np.mean(gl_l1)),
        "tokens_per_second": float(sum(n_tokens) / total_s),
        "token_bits_per_second": float(sum(tok_bits) / total_s),
        "baseline_bits_per_second": float(sum(base_bits) / total_s),
        "seconds_per_item": float(total_s / len(items)),
        "sample_rate": sr,
        **code_stats(rt["codes"], tokenizer.vocab_size),
    }
