"""fsq_image: reconstruction improves with fitting, determinism, shapes and resizing."""
from __future__ import annotations

import numpy as np
import pytest

from dataengine.errors import RecipeError, RejectError
from dataengine.tokenize.image_fsq import FSQImageTokenizer

QUIET = lambda *_: None  # noqa: E731
TINY = {"steps": 100, "batch_size": 8, "channels": 32}


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    mse = ((a.astype(np.float64) - b.astype(np.float64)) ** 2).mean()
    return float(10 * np.log10(255.0**2 / max(mse, 1e-10)))


def test_round_trip_beats_mean_colour_and_unfitted(image_tok, images):
    x = images[2]
    codes, side = image_tok.encode(x)
    y = image_tok.decode(codes, side)
    assert y.shape == (64, 64, 3) and y.dtype == np.uint8
    mean_colour = np.broadcast_to(x.reshape(-1, 3).mean(axis=0), x.shape)
    unfitted = FSQImageTokenizer(TINY)
    p_fit, p_const = psnr(x, y), psnr(x, mean_colour)
    p_unfit = psnr(x, unfitted.decode(*unfitted.encode(x)))
    assert p_fit > 16.0
    assert p_fit > p_const + 2.0
    assert p_fit > p_unfit + 3.0


def test_codes_grid_and_card(image_tok, images):
    codes, side = image_tok.encode(images[0])
    assert side == {"grid": [8, 8]} and codes.shape == (64,)
    assert image_tok.level_sizes() == [8 * 5 * 5 * 5]
    card = image_tok.card()
    assert card["tokens_per_unit"] == {"tokens_per_image": 64}
    assert card["params"]["levels"] == [8, 5, 5, 5] and card["params"]["steps"] == 100
    assert len(card["weights_sha256"]) == 64
    assert card["fitted_on"]["n_samples"] == 8


def test_defaults():
    assert FSQImageTokenizer.defaults == {"size": 64, "downsample": 8, "levels": [8, 5, 5, 5],
                                          "channels": 64, "steps": 800, "batch_size": 32, "lr": 2e-3,
                                          "patience": 3, "eval_every": 50,
                                          "entropy_weight": 0.0}


def test_fit_is_deterministic(images):
    params = {"steps": 3, "batch_size": 4, "channels": 16}
    a = FSQImageTokenizer.fit(images[:4], params, seed=7, log=QUIET)
    b = FSQImageTokenizer.fit(images[:4], params, seed=7, log=QUIET)
    c = FSQImageTokenizer.fit(images[:4], params, seed=8, log=QUIET)
    assert a.weights_sha256() == b.weights_sha256() != c.weights_sha256()


def test_fit_logs_progress(images):
    lines: list[str] = []
    FSQImageTokenizer.fit(images[:2], {"steps": 2, "batch_size": 2, "channels": 16}, seed=0, log=lines.append)
    assert lines and "step 2/2" in lines[-1]


def test_other_sizes_grey_and_rgba_are_resized(image_tok, images):
    big = np.repeat(np.repeat(images[0], 2, axis=0), 3, axis=1)  # 128 x 192
    codes, side = image_tok.encode(big)
    assert codes.shape == (64,) and side["grid"] == [8, 8]
    grey = images[0][:, :, 0]
    rgba = np.concatenate([images[0], np.full((64, 64, 1), 255, np.uint8)], axis=2)
    assert image_tok.encode(grey)[0].shape == (64,)
    np.testing.assert_array_equal(image_tok.encode(rgba)[0], image_tok.encode(images[0])[0])


def test_batch_mixes_sizes(image_tok, images):
    small = images[1][::2, ::2]
    out = image_tok.encode_batch([images[0], small, images[2]])
    np.testing.assert_array_equal(out[0][0], image_tok.encode(images[0])[0])
    np.testing.assert_array_equal(out[1][0], image_tok.encode(small)[0])


def test_bad_inputs_and_params(image_tok):
    with pytest.raises(RejectError):
        image_tok.encode(np.zeros((4, 4, 4, 3), np.uint8))
    with pytest.raises(RejectError):
        image_tok.encode(np.zeros((8, 8, 3), np.float32))
    with pytest.raises(RecipeError):
        FSQImageTokenizer({"downsample": 6})
    with pytest.raises(RecipeError):
        FSQImageTokenizer({"downsample": 1})
    with pytest.raises(RecipeError):
        FSQImageTokenizer.fit([], {}, seed=0, log=QUIET)


def test_codebook_entropy_rewards_spread_codes_and_has_gradients():
    import torch
    from vector_quantize_pytorch import FSQ

    from dataengine.tokenize.image_fsq import soft_code_entropy

    fsq = FSQ(levels=[8, 6, 5], dim=16)
    g = torch.Generator().manual_seed(0)
    collapsed = soft_code_entropy(fsq, torch.zeros(4, 16, 8, 8))  # every cell on one code
    spread_z = torch.randn(4, 16, 8, 8, generator=g).requires_grad_(True)
    spread = soft_code_entropy(fsq, spread_z)
    assert 0.0 <= float(collapsed) < float(spread) <= 1.0
    spread.backward()
    assert spread_z.grad is not None and float(spread_z.grad.abs().sum()) > 0


def test_entropy_weight_changes_training_and_stays_deterministic(images):
    params = {"steps": 3, "batch_size": 4, "channels": 16, "levels": [8, 6, 5]}
    plain = FSQImageTokenizer.fit(images[:4], params, seed=7, log=QUIET)
    a = FSQImageTokenizer.fit(images[:4], {**params, "entropy_weight": 0.05}, seed=7, log=QUIET)
    b = FSQImageTokenizer.fit(images[:4], {**params, "entropy_weight": 0.05}, seed=7, log=QUIET)
    assert a.weights_sha256() == b.weights_sha256() != plain.weights_sha256()
    assert a.vocab_size == 240 and a.card()["params"]["entropy_weight"] == 0.05
