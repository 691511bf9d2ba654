"""mel_fsq: fitting lowers the log-mel error; shapes, lengths and determinism."""
from __future__ import annotations

import math

import numpy as np
import pytest

from dataengine.errors import RecipeError, RejectError
from dataengine.tokenize.audio_mel_fsq import MelFSQTokenizer

QUIET = lambda *_: None  # noqa: E731
TINY = {"steps": 60, "batch_size": 8, "channels": 32, "segment_frames": 32}


def mel_mse(tok: MelFSQTokenizer, wave: np.ndarray) -> float:
    codes, side = tok.encode(wave)
    ref = tok.log_mel(wave).numpy()
    return float(((tok.decode_mel(codes, side) - ref) ** 2).mean())


def test_fit_lowers_mel_error(mel_tok, clips):
    # clips[0] is the held-out validation clip (the first ~10%); clips[1:] are trained on
    assert mel_tok.fitted_on["n_val"] == 1
    unfitted = MelFSQTokenizer(TINY)
    before, after = mel_mse(unfitted, clips[1]), mel_mse(mel_tok, clips[1])
    assert after < 0.5 * before
    variance = float(mel_tok.log_mel(clips[1]).numpy().var())
    assert after < 0.5 * variance  # better than predicting the mean spectrum
    assert mel_mse(mel_tok, clips[0]) < 0.5 * mel_mse(unfitted, clips[0])  # held out: better too


def test_token_count_side_and_card(mel_tok, clips):
    codes, side = mel_tok.encode(clips[0])  # 1 s at 16 kHz
    n = 1 + 16000 // 256
    assert side == {"mel_frames": n, "samples": 16000}
    assert codes.shape == (math.ceil(n / 4),)
    assert mel_tok.decode_mel(codes, side).shape == (64, n)
    card = mel_tok.card()
    assert card["tokens_per_unit"] == {"tokens_per_second": 16000 / 256 / 4}
    assert card["level_sizes"] == [1000] and card["fitted_on"]["seconds"] == 4.0


def test_decode_returns_about_the_right_number_of_samples(mel_tok, make_clip):
    wave = make_clip(np.random.default_rng(4), 0.5, 16000)
    codes, side = mel_tok.encode(wave)
    out = mel_tok.decode(codes, side)
    assert out.dtype == np.float32 and out.shape == (8000,) and np.isfinite(out).all()
    no_len = mel_tok.decode(codes, {"mel_frames": side["mel_frames"]})
    assert abs(len(no_len) - 8000) <= 256
    np.testing.assert_array_equal(out, mel_tok.decode(codes, side))  # deterministic Griffin-Lim


def test_defaults():
    assert MelFSQTokenizer.defaults == {
        "sample_rate": 16000, "n_fft": 1024, "hop": 256, "n_mels": 64, "time_downsample": 4,
        "levels": [8, 5, 5, 5], "channels": 128, "steps": 600, "batch_size": 16,
        "segment_frames": 64, "lr": 2e-3, "patience": 3, "eval_every": 50,
    }


def test_fit_is_deterministic(clips):
    params = {"steps": 3, "batch_size": 4, "channels": 16, "segment_frames": 16}
    a = MelFSQTokenizer.fit(clips[:2], params, seed=3, log=QUIET)
    b = MelFSQTokenizer.fit(clips[:2], params, seed=3, log=QUIET)
    c = MelFSQTokenizer.fit(clips[:2], params, seed=4, log=QUIET)
    assert a.weights_sha256() == b.weights_sha256() != c.weights_sha256()


def test_short_stereo_and_bad_audio(mel_tok, clips):
    codes, side = mel_tok.encode(clips[0][:300])  # shorter than n_fft
    assert len(codes) >= 1 and mel_tok.decode(codes, side).shape == (300,)
    stereo = np.stack([clips[0], clips[0]], axis=1)  # [N, 2]
    np.testing.assert_array_equal(mel_tok.encode(stereo)[0], mel_tok.encode(clips[0])[0])
    batch = mel_tok.encode_batch([clips[0], clips[1][:8000], clips[2]])
    np.testing.assert_array_equal(batch[1][0], mel_tok.encode(clips[1][:8000])[0])
    with pytest.raises(RejectError):
        mel_tok.encode(np.array([np.nan] * 2000, np.float32))
    with pytest.raises(RejectError):
        mel_tok.encode(np.zeros(0, np.float32))
    with pytest.raises(RecipeError):
        MelFSQTokenizer({"time_downsample": 3})
