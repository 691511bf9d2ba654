"""Audio quality stats: level, silence, clipping, and the speech-activity ratio (Silero VAD)."""
from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch
from scipy.signal import lfilter

from dataengine import mediaio
from dataengine.curate import stats_audio as A
from dataengine.decode.audio import resample

SR = 16_000
PYGAME_DATA = Path(list(importlib.util.find_spec("pygame").submodule_search_locations)[0]) / "examples" / "data"


def music() -> np.ndarray:
    """A real recording (pygame's example house loop), mono at 16 kHz."""
    wave, sr = sf.read(str(PYGAME_DATA / "house_lo.wav"), dtype="float32")
    return resample(wave if wave.ndim == 1 else wave.mean(axis=1), sr, SR)


def vowels(seconds: float = 3.0, sr: int = SR, seed: int = 0) -> np.ndarray:
    """Speech-like sound: a 100-140 Hz glottal pulse train through vowel formants, 4 syllables/s."""
    rng = np.random.default_rng(seed)
    n = int(seconds * sr)
    t = np.arange(n) / sr
    phase = np.cumsum((120 + 20 * np.sin(2 * np.pi * 0.7 * t)) / sr)
    src = (np.diff(np.floor(phase), prepend=0) > 0).astype(np.float64)
    formants = [(730, 1090, 2440), (270, 2290, 3010), (530, 1840, 2480), (570, 840, 2410), (300, 870, 2240)]
    seg, out = int(0.18 * sr), np.zeros(n)
    for s in range(0, n, seg):
        x = src[s:s + seg]
        for f in formants[rng.integers(len(formants))]:
            r, th = np.exp(-np.pi * 80 / sr), 2 * np.pi * f / sr
            x = lfilter([1 - r], [1, -2 * r * np.cos(th), r * r], x)
        out[s:s + seg] = x
    out *= (0.5 * (1 - np.cos(2 * np.pi * 4 * t))) ** 1.5
    return (0.3 * out / np.abs(out).max()).astype(np.float32)


def sine(freq: float, amp: float, seconds: float = 1.0, sr: int = SR) -> np.ndarray:
    return (amp * np.sin(2 * np.pi * freq * np.arange(int(seconds * sr)) / sr)).astype(np.float32)


def test_duration_and_level() -> None:
    s = A.audio_stats(sine(440, 1.0, 2.0), SR, vad=False)
    assert s["audio_duration_s"] == pytest.approx(2.0)
    assert s["audio_rms_dbfs"] == pytest.approx(-3.01, abs=0.02)  # full-scale sine
    assert A.audio_stats(sine(440, 0.1), SR, vad=False)["audio_rms_dbfs"] == pytest.approx(-23.01, abs=0.02)
    z = A.audio_stats(np.zeros(SR, np.float32), SR, vad=False)
    assert z["audio_rms_dbfs"] == A.DB_FLOOR and z["audio_silence_ratio"] == 1.0
    assert A.audio_stats(np.zeros(0, np.float32), SR) == {"audio_duration_s": 0.0}


def test_silent_segment_raises_silence_ratio() -> None:
    x = music()[: 2 * SR]
    base = A.audio_stats(x, SR, vad=False)["audio_silence_ratio"]
    gap = np.concatenate([x[:SR], np.zeros(SR, np.float32), x[SR:]])  # 1 s of silence in 3 s
    with_gap = A.audio_stats(gap, SR, vad=False)["audio_silence_ratio"]
    assert with_gap == pytest.approx(base * 2 / 3 + 1 / 3, abs=0.02)
    assert with_gap > base + 0.25


def test_clipping_ratio() -> None:
    clipped = np.clip(sine(220, 1.6), -1, 1)  # flat tops
    expected = 1 - 2 / np.pi * np.arcsin(1 / 1.6)  # fraction of time |1.6 sin| >= 1
    assert A.audio_stats(clipped, SR, vad=False)["audio_clipping_ratio"] == pytest.approx(expected, abs=0.01)
    assert A.clipping_ratio(sine(220, 0.5)) == 0.0
    assert A.clipping_ratio(sine(441, 1.0)) < 0.001  # normalised to full scale: lone peaks, not clipping
    assert A.clipping_ratio(np.array([1.0], np.float32)) == 0.0


def _package_model():
    """The silero-vad package's TorchScript model, its weights under our names, and its thread setting undone."""
    threads = torch.get_num_threads()
    from silero_vad import load_silero_vad  # its import sets torch.set_num_threads(1)

    torch.set_num_threads(threads)
    jit = load_silero_vad()
    sd = jit._model.state_dict()
    names = {"stft_conv.weight": "stft.forward_basis_buffer", "final_conv.weight": "decoder.decoder.2.weight",
             "final_conv.bias": "decoder.decoder.2.bias"}
    for i in range(4):
        for k in ("weight", "bias"):
            names[f"conv{i + 1}.{k}"] = f"encoder.{i}.reparam_conv.{k}"
    for k in ("weight_ih", "weight_hh", "bias_ih", "bias_hh"):
        names[f"lstm_cell.{k}"] = f"decoder.rnn.{k}"
    return jit, A.silero_model({ours: sd[theirs] for ours, theirs in names.items()})


@pytest.mark.filterwarnings("ignore::FutureWarning")
@pytest.mark.filterwarnings("ignore::UserWarning")
@pytest.mark.filterwarnings("ignore::DeprecationWarning")
def test_batched_silero_matches_the_package_model() -> None:
    """Our batched arithmetic, given the package's TorchScript weights, gives its chunk-by-chunk output."""
    jit, ours = _package_model()
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # its 32 ms chunks one by one: two threads on a busy machine only spin
    try:
        for x in (vowels(1.0), music()[:SR + 123], np.zeros(700, np.float32)):
            with torch.jit.optimized_execution(False):  # skips seconds of TorchScript profiling on first calls
                ref = jit.audio_forward(torch.from_numpy(x), SR)[0].numpy()
            got = A.silero_speech_probs(x, ours)
            assert got.shape == ref.shape and np.abs(got - ref).max() < 1e-4
    finally:
        torch.set_num_threads(threads)


def test_speech_ratio_speech_like_vs_music_noise_silence() -> None:
    assert A._silero() is not None, "silero-vad is a pinned dependency: pip install -e ."
    noise = (np.random.default_rng(0).standard_normal(2 * SR) * 0.1).astype(np.float32)
    speechy = A.audio_stats(vowels(), SR)
    assert speechy["audio_vad"].startswith("silero-vad-")
    assert speechy["audio_speech_ratio"] > 0.3
    for x in (music()[: 3 * SR], noise, np.zeros(SR, np.float32)):
        assert A.audio_stats(x, SR)["audio_speech_ratio"] < 0.05
    # at another rate the wave is resampled to Silero's 16 kHz first
    assert A.audio_stats(vowels(sr=24_000), 24_000)["audio_speech_ratio"] > 0.3
    # a speech-like clip with 3 s of silence appended: the ratio falls by about half
    padded = np.concatenate([vowels(), np.zeros(3 * SR, np.float32)])
    assert A.audio_stats(padded, SR)["audio_speech_ratio"] == pytest.approx(
        speechy["audio_speech_ratio"] / 2, abs=0.08)


@pytest.mark.skipif(not mediaio.has_espeak(), reason="espeak-ng is not installed")
def test_speech_ratio_real_speech(tmp_path: Path) -> None:
    mediaio.speak("The quick brown fox jumps over the lazy dog, and then it rests.", tmp_path / "s.wav")
    wave, sr = sf.read(str(tmp_path / "s.wav"), dtype="float32")
    assert A.audio_stats(wave, int(sr))["audio_speech_ratio"] > 0.5


def test_energy_fallback(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(A, "_silero", lambda: None)
    s = A.audio_stats(vowels(), SR)
    assert s["audio_vad"] == "energy" and s["audio_speech_ratio"] > 0.3
    noise = (np.random.default_rng(0).standard_normal(2 * SR) * 0.1).astype(np.float32)
    assert A.audio_stats(noise, SR)["audio_speech_ratio"] < 0.05  # loud but spectrally flat
    assert A.audio_stats(np.zeros(SR, np.float32), SR)["audio_speech_ratio"] == 0.0


def test_silero_stft_basis_is_a_hann_windowed_dft() -> None:
    """The FFT in `silero_speech_probs` stands in for the model's STFT conv: same basis."""
    from safetensors.torch import load_file

    basis = load_file(str(A._silero_path()))["stft_conv.weight"][:, 0].double()  # [258, 256]
    n, k = torch.arange(256, dtype=torch.float64), torch.arange(129, dtype=torch.float64)[:, None]
    hann = torch.hann_window(256, periodic=True, dtype=torch.float64)
    angle = 2 * torch.pi * k * n / 256
    assert torch.allclose(basis[:129], torch.cos(angle) * hann, atol=1e-4)
    assert torch.allclose(basis[129:], -torch.sin(angle) * hann, atol=1e-4)
