"""causal_video: shapes, causality, fitting helps, determinism, save/load, code range."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from dataengine.errors import RecipeError, RejectError
from dataengine.tokenize import load_tokenizer
from dataengine.tokenize.video_causal import CausalVideoFSQ, CausalVideoTokenizer

QUIET = lambda *_: None  # noqa: E731


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    mse = ((a.astype(np.float64) - b.astype(np.float64)) ** 2).mean()
    return float(10 * np.log10(255.0**2 / max(mse, 1e-10)))


@pytest.mark.parametrize("T, latent", [(1, 1), (5, 2), (8, 3), (9, 3)])
def test_shapes_and_side(causal_tok, make_video, T, latent):
    video = make_video(np.random.default_rng(T), T)
    codes, side = causal_tok.encode(video)
    assert side == {"frames": T, "grid": [8, 8], "latent_frames": latent}
    assert codes.dtype == np.int32 and codes.shape == (latent * 64,)
    assert 0 <= codes.min() and codes.max() < causal_tok.vocab_size == 8 * 8 * 8 * 5 * 5
    out = causal_tok.decode(codes, side)
    assert out.shape == (T, 64, 64, 3) and out.dtype == np.uint8


def test_later_frames_do_not_change_earlier_codes(causal_tok, make_video):
    video = make_video(np.random.default_rng(0), 9)
    codes, _ = causal_tok.encode(video)
    changed = video.copy()
    changed[8] = 255 - changed[8]  # frame 8 belongs to latent frame 2 (frames 5..8)
    codes2, _ = causal_tok.encode(changed)
    np.testing.assert_array_equal(codes2[: 2 * 64], codes[: 2 * 64])
    assert not np.array_equal(codes2[2 * 64 :], codes[2 * 64 :])
    prefix, _ = causal_tok.encode(video[:5])  # a prefix's codes are the clip's first codes
    np.testing.assert_array_equal(prefix, codes[: 2 * 64])


def test_decoder_is_causal():
    torch.manual_seed(0)
    model = CausalVideoFSQ([8, 5, 5, 5], 32, 8, 4).eval()
    idx = torch.randint(0, 1000, (1, 3, 4, 4))
    later = idx.clone()
    later[:, 2] = (later[:, 2] + 1) % 1000
    with torch.inference_mode():
        a, b = model.decode(idx), model.decode(later)
    assert a.shape == (1, 9, 3, 32, 32)  # x_BT3HW
    assert torch.equal(a[:, :5], b[:, :5]) and not torch.equal(a[:, 5:], b[:, 5:])


def test_round_trip_improves_with_fitting(causal_tok, videos):
    unfitted = CausalVideoTokenizer({"channels": 32})
    video = videos[1]
    fitted = psnr(video, causal_tok.decode(*causal_tok.encode(video)))
    assert fitted > psnr(video, unfitted.decode(*unfitted.encode(video))) + 2.0
    assert fitted > 14.0  # (the tiny image tokenizer it builds on gets ~15.4 frame by frame)


def test_card_and_fit_facts(causal_tok, image_tok):
    card = causal_tok.card()
    assert card["tokens_per_unit"] == {"tokens_per_first_frame": 64, "tokens_per_frame": 16.0}
    assert card["level_sizes"] == [12800] and card["params"]["temporal_downsample"] == 4
    facts = card["fitted_on"]
    assert facts["n_samples"] == 4 and facts["n_val_videos"] == 1 and facts["seed"] == 0
    assert facts["frame_autoencoder"] == image_tok.weights_sha256()
    assert {"steps_run", "best_val_loss", "stopped_early"} <= set(facts) and "seconds" not in facts


def test_fit_is_deterministic(videos, images, image_tok):
    params = {"steps": 4, "batch_size": 2, "channels": 32}
    kw = dict(log=QUIET, images=images[:3], image_tokenizer=image_tok)
    a = CausalVideoTokenizer.fit(videos[:2], params, seed=5, **kw)
    b = CausalVideoTokenizer.fit(videos[:2], params, seed=5, **kw)
    c = CausalVideoTokenizer.fit(videos[:2], params, seed=6, **kw)
    assert a.weights_sha256() == b.weights_sha256() != c.weights_sha256()


def test_fit_without_an_image_tokenizer_fits_its_own_frame_autoencoder(make_video):
    rng = np.random.default_rng(1)
    vids = [make_video(rng, 6, size=32) for _ in range(2)]
    lines: list[str] = []
    tok = CausalVideoTokenizer.fit(vids, {"size": 32, "steps": 3, "batch_size": 2, "channels": 16},
                                   seed=0, log=lines.append)
    assert any("[fsq_image]" in line for line in lines)
    codes, side = tok.encode(vids[0])
    assert side == {"frames": 6, "grid": [4, 4], "latent_frames": 3}
    assert tok.decode(codes, side).shape == (6, 32, 32, 3)


def test_save_load_gives_same_codes_and_frames(causal_tok, videos, tmp_path):
    causal_tok.save(tmp_path)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["card.yaml", "weights.safetensors"]
    loaded = load_tokenizer(tmp_path)
    assert isinstance(loaded, CausalVideoTokenizer) and loaded.card() == causal_tok.card()
    codes, side = causal_tok.encode(videos[0])
    np.testing.assert_array_equal(loaded.encode(videos[0])[0], codes)
    np.testing.assert_array_equal(loaded.decode(codes, side), causal_tok.decode(codes, side))


def test_batch_groups_shapes(causal_tok, videos):
    out = causal_tok.encode_batch([videos[0], videos[1], videos[0][:9], videos[2]])
    assert [s["frames"] for _, s in out] == [13, 9, 9, 11]
    np.testing.assert_array_equal(out[2][0], causal_tok.encode(videos[0][:9])[0])
    np.testing.assert_array_equal(out[3][0], causal_tok.encode(videos[2])[0])


def test_bad_inputs_and_params(causal_tok):
    with pytest.raises(RejectError):
        causal_tok.encode(np.zeros((64, 64, 3), np.uint8))
    with pytest.raises(RejectError):
        causal_tok.encode(np.zeros((2, 8, 8, 3), np.float32))
    with pytest.raises(ValueError, match="latent frames"):
        causal_tok.decode(np.zeros(65, np.int32), {"frames": 2, "grid": [8, 8], "latent_frames": 1})
    with pytest.raises(RecipeError):
        CausalVideoTokenizer({"temporal_downsample": 3})
    with pytest.raises(RecipeError):
        CausalVideoTokenizer({"spatial_downsample": 6})
    with pytest.raises(RecipeError):
        CausalVideoTokenizer.fit([], {}, seed=0, log=QUIET)
