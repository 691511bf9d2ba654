"""encodec: a local checkpoint (built in the test), 75 frames/s, n_q codebooks per bandwidth."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from dataengine.errors import RecipeError
from dataengine.tokenize import load_tokenizer, sha256_file
from dataengine.tokenize.audio_encodec import EncodecTokenizer

QUIET = lambda *_: None  # noqa: E731


@pytest.mark.parametrize("bandwidth,n_q", [(1.5, 2), (3.0, 4), (6.0, 8), (12.0, 16), (24.0, 32)])
def test_frames_and_codebooks_per_bandwidth(encodec_ckpt, make_clip, bandwidth, n_q):
    tok = EncodecTokenizer({"checkpoint": str(encodec_ckpt), "bandwidth": bandwidth})
    assert tok.level_sizes() == [1024] * n_q and tok.vocab_size == 1024 * n_q
    wave = make_clip(np.random.default_rng(0), 0.4, 24000)  # 0.4 s -> 30 frames at 75 frames/s
    codes, side = tok.encode(wave)
    assert side == {"n_q": n_q, "frames": 30, "samples": 9600}
    assert codes.shape == (30 * n_q,) and codes.dtype == np.int32
    levels_TQ = codes.reshape(30, n_q) // 1024  # time-major: frame t holds levels 0..n_q-1
    assert (levels_TQ == np.arange(n_q)).all()
    assert (codes % 1024 != 0).any()  # the random codebooks give real (non-zero) codes
    assert tok.tokens_per_unit()["tokens_per_second"] == 75 * n_q


def test_decode_length_and_card(encodec_tok, encodec_ckpt, make_clip, tmp_path):
    wave = make_clip(np.random.default_rng(1), 0.5, 24000)
    codes, side = encodec_tok.encode(wave)
    out = encodec_tok.decode(codes, side)
    assert out.shape == (12000,) and out.dtype == np.float32 and np.isfinite(out).all()
    card = encodec_tok.card()
    assert card["weights_sha256"] == sha256_file(encodec_ckpt)
    assert card["params"] == {"checkpoint": str(encodec_ckpt), "bandwidth": 3.0, "sample_rate": 24000}
    encodec_tok.save(tmp_path)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["card.yaml"]  # no copy of the weights


def test_missing_checkpoint_explains_the_fix(tmp_path):
    with pytest.raises(RecipeError, match="only zeros.*no model download.*checkpoint:"):
        EncodecTokenizer.fit([], {}, seed=0, log=QUIET)
    with pytest.raises(RecipeError, match="not found.*only zeros"):
        EncodecTokenizer({"checkpoint": str(tmp_path / "nope.pt")})
    junk = tmp_path / "junk.pt"
    junk.write_bytes(b"not a checkpoint")
    with pytest.raises(RecipeError, match="not an EnCodec"):
        EncodecTokenizer({"checkpoint": str(junk)})


def test_bad_bandwidth(encodec_ckpt):
    with pytest.raises(RecipeError, match="bandwidth"):
        EncodecTokenizer({"checkpoint": str(encodec_ckpt), "bandwidth": 5.0})


def test_changed_checkpoint_is_refused(encodec_tok, tmp_path):
    ckpt = tmp_path / "copy.pt"
    ckpt.write_bytes(encodec_tok.checkpoint_path.read_bytes())
    tok = EncodecTokenizer({"checkpoint": str(ckpt), "bandwidth": 1.5})
    tok.save(tmp_path / "tok")
    state = torch.load(ckpt, map_location="cpu", weights_only=True)
    state["quantizer.vq.layers.0._codebook.embed"][0] += 1.0  # a different, valid checkpoint
    torch.save(state, ckpt)
    with pytest.raises(RecipeError, match="restore that checkpoint or re-fit"):
        load_tokenizer(tmp_path / "tok")
