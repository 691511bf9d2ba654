"""frames: per-frame fsq_image codes, bound to one image tokenizer's weights."""
from __future__ import annotations

import numpy as np
import pytest

from dataengine.errors import RecipeError, RejectError
from dataengine.tokenize import load_tokenizer
from dataengine.tokenize.image_fsq import FSQImageTokenizer
from dataengine.tokenize.video_frames import FramesTokenizer

QUIET = lambda *_: None  # noqa: E731


def test_codes_are_the_frames_codes_in_time_order(frames_tok, image_tok, images):
    video = np.stack(images[:3])
    codes, side = frames_tok.encode(video)
    assert side == {"frames": 3, "grid": [8, 8]} and codes.shape == (3 * 64,)
    for t in range(3):
        np.testing.assert_array_equal(codes[t * 64 : (t + 1) * 64], image_tok.encode(images[t])[0])
    out = frames_tok.decode(codes, side)
    assert out.shape == (3, 64, 64, 3) and out.dtype == np.uint8
    np.testing.assert_array_equal(out[1], image_tok.decode(*image_tok.encode(images[1])))


def test_shares_level_sizes_and_records_image_weights(frames_tok, image_tok):
    assert frames_tok.level_sizes() == image_tok.level_sizes()
    card = frames_tok.card()
    assert card["image_tokenizer"]["weights_sha256"] == image_tok.weights_sha256()
    assert card["weights_sha256"] == image_tok.weights_sha256()
    assert card["tokens_per_unit"] == {"tokens_per_frame": 64}
    assert card["fitted_on"]["n_frames"] == 3


def test_load_needs_the_matching_image_tokenizer(frames_tok, tmp_path):
    frames_tok.save(tmp_path)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["card.yaml"]
    with pytest.raises(RecipeError, match="image_tokenizer"):
        load_tokenizer(tmp_path)
    other = FSQImageTokenizer({"steps": 1, "channels": 16})
    with pytest.raises(RecipeError, match="re-fit the video tokenizer"):
        load_tokenizer(tmp_path, image_tokenizer=other)


def test_fit_needs_an_image_tokenizer():
    with pytest.raises(RecipeError, match="image_tokenizer"):
        FramesTokenizer.fit([], {}, seed=0, log=QUIET)


def test_batch_of_videos(frames_tok, images):
    a, b = np.stack(images[:2]), np.stack(images[2:5])
    out = frames_tok.encode_batch([a, b])
    assert [s["frames"] for _, s in out] == [2, 3]
    np.testing.assert_array_equal(out[1][0], frames_tok.encode(b)[0])


def test_bad_video_is_rejected(frames_tok):
    with pytest.raises(RejectError):
        frames_tok.encode(np.zeros((64, 64, 3), np.uint8))
    with pytest.raises(RejectError):
        frames_tok.encode(np.zeros((0, 64, 64, 3), np.uint8))
