"""The Tokenizer contract, checked for every family."""
from __future__ import annotations

import json

import numpy as np
import pytest
import yaml

from dataengine.errors import RecipeError
from dataengine.tokenize import FAMILIES, get_family, load_tokenizer, sha256_file
from dataengine.tokenize.base import CARD_FILE, Tokenizer

FAMILY_CASES = ["bpe", "fsq_image", "frames", "causal_video", "mel_fsq", "encodec", "sensor_bins"]
CARD_KEYS = {"family", "modality", "version", "params", "level_sizes", "vocab_size",
             "tokens_per_unit", "weights_sha256", "fitted_on"}


def test_registry_lists_every_family():
    assert set(FAMILIES) == set(FAMILY_CASES)
    for name, cls in FAMILIES.items():
        assert issubclass(cls, Tokenizer) and cls.family == name
        assert cls.modality in {"text", "image", "video", "audio", "sensor"}


def test_unknown_family_names_the_close_match():
    with pytest.raises(RecipeError, match=r"did you mean 'fsq_image'.*known families: bpe"):
        get_family("fsq_imgae")


def test_unknown_param_is_a_recipe_error():
    with pytest.raises(RecipeError, match="did you mean 'n_bins'"):
        get_family("sensor_bins")({"nbins": 3})


@pytest.mark.parametrize("family_case", FAMILY_CASES, indirect=True)
def test_codes_sizes_and_card(family_case):
    tok, x, _ = family_case
    codes, side = tok.encode(x)
    assert codes.dtype == np.int32 and codes.ndim == 1 and codes.size > 0
    assert 0 <= codes.min() and codes.max() < tok.vocab_size
    assert tok.vocab_size == sum(tok.level_sizes()) and all(s > 0 for s in tok.level_sizes())
    json.dumps(side)  # side info is JSON-able

    card = tok.card()
    assert CARD_KEYS <= set(card)
    assert card["family"] == tok.family and card["modality"] == tok.modality
    assert card["level_sizes"] == tok.level_sizes() and card["vocab_size"] == tok.vocab_size
    assert card["params"] == tok.params and card["tokens_per_unit"]
    assert "seed" in card["fitted_on"]
    assert yaml.safe_load(yaml.safe_dump(card)) == card  # plain data only


@pytest.mark.parametrize("family_case", FAMILY_CASES, indirect=True)
def test_save_load_gives_same_codes(family_case, tmp_path):
    tok, x, resources = family_case
    tok.save(tmp_path / "a")
    tok.save(tmp_path / "b")
    for name in sorted(p.name for p in (tmp_path / "a").iterdir()):  # deterministic bytes
        assert (tmp_path / "a" / name).read_bytes() == (tmp_path / "b" / name).read_bytes()
    card = yaml.safe_load((tmp_path / "a" / CARD_FILE).read_text())
    if tok.weights_name:
        assert card["weights_sha256"] == sha256_file(tmp_path / "a" / tok.weights_name)
    loaded = load_tokenizer(tmp_path / "a", **resources)
    assert type(loaded) is type(tok) and loaded.card() == tok.card()
    c1, s1 = tok.encode(x)
    c2, s2 = loaded.encode(x)
    np.testing.assert_array_equal(c1, c2)
    assert s1 == s2


@pytest.mark.parametrize("family_case", FAMILY_CASES, indirect=True)
def test_encode_batch_matches_encode(family_case):
    tok, x, _ = family_case
    batch = tok.encode_batch([x, x])
    single = tok.encode(x)
    for codes, side in batch:
        np.testing.assert_array_equal(codes, single[0])
        assert side == single[1]


@pytest.mark.parametrize("family_case", FAMILY_CASES, indirect=True)
def test_to_device_keeps_codes(family_case):
    tok, x, _ = family_case
    before = tok.encode(x)[0]
    assert tok.to("cpu") is tok and str(tok.device) == "cpu"
    np.testing.assert_array_equal(tok.encode(x)[0], before)


@pytest.mark.parametrize("family_case", FAMILY_CASES, indirect=True)
def test_decode_rejects_out_of_range_codes(family_case):
    tok, x, _ = family_case
    codes, side = tok.encode(x)
    with pytest.raises(ValueError, match="local"):
        tok.decode(codes + tok.vocab_size, side)


def test_tampered_weights_are_refused(image_tok, tmp_path):
    image_tok.save(tmp_path)
    path = tmp_path / image_tok.weights_name
    path.write_bytes(path.read_bytes()[:-4] + b"\0\0\0\0")
    with pytest.raises(RecipeError, match="does not match the sha256"):
        load_tokenizer(tmp_path)


def test_missing_card_is_a_recipe_error(tmp_path):
    with pytest.raises(RecipeError, match="no tokenizer card"):
        load_tokenizer(tmp_path)
