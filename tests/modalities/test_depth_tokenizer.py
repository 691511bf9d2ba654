"""fsq_depth: a tiny fit on synthetic scenes; codes, side info, metres out, persistence, determinism."""
from __future__ import annotations

import json

import numpy as np
import pytest

from dataengine.errors import RecipeError, RejectError
from dataengine.modalities.depth.decode import resize_depth
from dataengine.modalities.depth.metrics import abs_rel
from dataengine.modalities.depth.tokenizer import FSQDepthTokenizer

QUIET = lambda *_: None  # noqa: E731
TINY = {"steps": 150, "size": 32, "downsample": 8, "channels": 32, "batch_size": 8, "eval_every": 25}
ABS_REL_BOUND = 0.15  # fitted: ~0.05; untrained: ~0.33


def synth_depth(rng: np.random.Generator, h: int = 40, w: int = 48) -> np.ndarray:
    """A structured metres map: a tilted plane, a floor meeting a wall, or a box before a wall.

    About 5% of the pixels are invalid (0), as holes in a real sensor's map.
    """
    yy, xx = np.mgrid[0:h, 0:w] / np.array([h, w])[:, None, None]
    kind = rng.integers(0, 3)
    if kind == 0:
        d = rng.uniform(1, 4) + rng.uniform(-2, 2) * xx + rng.uniform(0, 4) * yy
    elif kind == 1:
        wall, horizon = rng.uniform(3, 8), rng.uniform(0.3, 0.6)
        d = np.where(yy > horizon, np.minimum(0.45 / np.maximum(yy - horizon, 1e-3), wall), wall)
    else:
        d = rng.uniform(4, 9) + rng.uniform(-1, 1) * xx
        (top, left), (bh, bw) = rng.uniform(0.1, 0.5, 2), rng.uniform(0.25, 0.45, 2)
        box = (yy > top) & (yy < top + bh) & (xx > left) & (xx < left + bw)
        d = np.where(box, d * rng.uniform(0.3, 0.6), d)
    d = np.clip(d, 0.3, 50.0)
    d[rng.random((h, w)) < 0.05] = 0.0
    return d.astype(np.float32)


@pytest.fixture(scope="module")
def maps() -> dict[str, list[np.ndarray]]:
    rng = np.random.default_rng(0)
    return {"train": [synth_depth(rng) for _ in range(24)], "test": [synth_depth(rng) for _ in range(12)]}


@pytest.fixture(scope="module")
def depth_tok(maps) -> FSQDepthTokenizer:
    return FSQDepthTokenizer.fit(maps["train"], TINY, seed=0, log=QUIET)


def mean_abs_rel(tok: FSQDepthTokenizer, items: list[np.ndarray]) -> float:
    decoded = tok.decode_batch(tok.encode_batch(items))
    return float(np.mean([abs_rel(p, resize_depth(m, tok.params["size"])) for m, p in zip(items, decoded)]))


def test_defaults():
    assert FSQDepthTokenizer.defaults == {"size": 64, "downsample": 8, "levels": [8, 5, 5, 5], "channels": 64,
                                          "steps": 600, "batch_size": 32, "lr": 2e-3, "patience": 3,
                                          "eval_every": 50}
    tok = FSQDepthTokenizer()
    assert tok.family == "fsq_depth" and tok.modality == "depth"
    assert tok.level_sizes() == [1000] and tok.tokens_per_unit() == {"tokens_per_depth_map": 64}
    with pytest.raises(RecipeError):
        FSQDepthTokenizer({"size": 30})


def test_codes_in_range_and_side_info(depth_tok, maps):
    codes, side = depth_tok.encode(maps["test"][0])
    assert codes.dtype == np.int32 and codes.shape == (16,)
    assert codes.min() >= 0 and codes.max() < depth_tok.vocab_size
    assert side["grid"] == [4, 4] and side["log_lo"] < side["log_hi"]
    for key in ("log_lo", "log_hi"):
        assert type(side[key]) is float and float(np.float32(side[key])) == side[key]
    again = json.loads(json.dumps(side))
    assert again == side
    np.testing.assert_array_equal(depth_tok.decode(codes, again), depth_tok.decode(codes, side))
    card = depth_tok.card()
    assert card["tokens_per_unit"] == {"tokens_per_depth_map": 16} and len(card["weights_sha256"]) == 64
    assert card["fitted_on"]["n_samples"] == 24 and card["fitted_on"]["seed"] == 0


def test_decode_returns_positive_metres(depth_tok, maps):
    out = depth_tok.decode(*depth_tok.encode(maps["test"][1]))
    assert out.dtype == np.float32 and out.shape == (32, 32)
    assert np.isfinite(out).all() and (out > 0).all()
    gt = resize_depth(maps["test"][1], 32)
    assert 0.5 < np.median(out) / np.median(gt[gt > 0]) < 2.0  # metres, not normalised units


def test_batch_matches_single_and_any_size(depth_tok, maps):
    big = np.repeat(np.repeat(maps["test"][2], 2, 0), 3, 1)  # 80 x 144
    items = [maps["test"][0], big, maps["test"][3][:20, :30]]
    batch = depth_tok.encode_batch(items)
    for x, (codes, side) in zip(items, batch):
        c1, s1 = depth_tok.encode(x)
        np.testing.assert_array_equal(codes, c1)
        assert side == s1
    decoded = depth_tok.decode_batch(batch)
    for (codes, side), y, y_again in zip(batch, decoded, depth_tok.decode_batch(batch)):
        np.testing.assert_array_equal(y, y_again)  # deterministic
        # alone vs in a batch: the same up to float summation order of the conv kernels
        np.testing.assert_allclose(y, depth_tok.decode(codes, side), rtol=1e-5)


def test_no_valid_pixel_in_crop_is_rejected(depth_tok):
    d = np.zeros((10, 40), np.float32)
    d[:, :3] = 2.0  # only outside the centre square
    with pytest.raises(RejectError) as info:
        depth_tok.encode(d)
    assert info.value.reason == "no_valid_depth"


def test_save_load_round_trip(depth_tok, maps, tmp_path):
    depth_tok.save(tmp_path / "tok")
    loaded = FSQDepthTokenizer.load(tmp_path / "tok")
    assert loaded.weights_sha256() == depth_tok.weights_sha256()
    for x in maps["test"][:3]:
        (c0, s0), (c1, s1) = depth_tok.encode(x), loaded.encode(x)
        np.testing.assert_array_equal(c0, c1)
        assert s0 == s1
        np.testing.assert_array_equal(depth_tok.decode(c0, s0), loaded.decode(c1, s1))


def test_fit_is_deterministic(maps):
    params = {**TINY, "steps": 4, "channels": 16}
    a = FSQDepthTokenizer.fit(maps["train"][:8], params, seed=3, log=QUIET)
    b = FSQDepthTokenizer.fit(maps["train"][:8], params, seed=3, log=QUIET)
    c = FSQDepthTokenizer.fit(maps["train"][:8], params, seed=4, log=QUIET)
    assert a.weights_sha256() == b.weights_sha256() != c.weights_sha256()


def test_fitted_reconstructs_held_out_maps(depth_tok, maps):
    fitted = mean_abs_rel(depth_tok, maps["test"])
    untrained = mean_abs_rel(FSQDepthTokenizer(TINY), maps["test"])
    assert fitted < ABS_REL_BOUND < untrained


def test_fit_refuses_no_usable_maps():
    with pytest.raises(RecipeError):
        FSQDepthTokenizer.fit([np.zeros((8, 8), np.float32)], TINY, seed=0, log=QUIET)
