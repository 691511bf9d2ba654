"""sensor_bins: mean-abs scaling + uniform bins, error within half a bin."""
from __future__ import annotations

import numpy as np
import pytest

from dataengine.errors import RejectError
from dataengine.tokenize.sensor_bins import SensorBinsTokenizer

QUIET = lambda *_: None  # noqa: E731


def test_round_trip_within_half_a_bin(sensor_tok):
    rng = np.random.default_rng(0)
    x_TC = (rng.normal(size=(200, 4)) * [1.0, 10.0, 1e-3, 250.0] + [0, 5, 0, -100]).astype(np.float32)
    codes, side = sensor_tok.encode(x_TC)
    assert codes.shape == (200 * 4,) and side["channels"] == 4 and len(side["scale"]) == 4
    y_TC = sensor_tok.decode(codes, side)
    assert y_TC.shape == (200, 4) and y_TC.dtype == np.float32
    scale_C = np.asarray(side["scale"])
    np.testing.assert_allclose(scale_C, np.abs(x_TC.astype(np.float64)).mean(axis=0), rtol=1e-6)
    inside = np.abs(x_TC / scale_C) <= 6.0
    half_bin_C = 0.5 * (12.0 / 256) * scale_C
    err_TC = np.abs(y_TC.astype(np.float64) - x_TC)
    assert (err_TC <= half_bin_C * (1 + 1e-5) + 1e-6 * np.abs(x_TC))[inside].all()


def test_time_major_and_clipping():
    tok = SensorBinsTokenizer({"n_bins": 8, "clip": 2.0})
    x_TC = np.array([[1.0, -1.0], [1.0, -1.0], [1.0, 100.0]], np.float32)
    codes, side = tok.encode(x_TC)
    codes_TC = codes.reshape(3, 2)  # t0c0, t0c1, t1c0, ...
    assert (codes_TC[:, 0] == codes_TC[0, 0]).all() and codes_TC[2, 1] == 7  # beyond clip: last bin
    y = tok.decode(codes, side)
    assert y[2, 1] == pytest.approx((2.0 - 0.25) * side["scale"][1])


def test_all_zero_and_constant_channels():
    tok = SensorBinsTokenizer({})
    x_TC = np.zeros((10, 2), np.float32)
    x_TC[:, 1] = 3.0
    codes, side = tok.encode(x_TC)
    assert side["scale"] == [1.0, 3.0]
    y = tok.decode(codes, side)
    assert np.abs(y[:, 0]).max() <= 0.5 * 12 / 256 and np.abs(y[:, 1] - 3.0).max() <= 0.5 * 12 / 256 * 3


def test_stateless_card_and_fit(sensor_tok, tmp_path):
    card = sensor_tok.card()
    assert card["weights_sha256"] is None and card["params"] == {"n_bins": 256, "clip": 6.0}
    assert card["level_sizes"] == [256] and card["fitted_on"]["n_values"] == 150
    sensor_tok.save(tmp_path)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["card.yaml"]
    tok = SensorBinsTokenizer.fit([np.ones((4, 2)), np.full((3, 1), np.nan)], {}, seed=0, log=QUIET)
    assert tok.fitted_on["n_rejected"] == 1


def test_bad_input():
    tok = SensorBinsTokenizer({})
    assert tok.encode(np.arange(5.0))[1]["channels"] == 1  # 1-D is one channel
    with pytest.raises(RejectError):
        tok.encode(np.array([[1.0, np.nan]]))
    with pytest.raises(RejectError):
        tok.encode(np.zeros((0, 3)))
