"""fit orchestration: a sample of the corpus, every role fitted, stale tokenizers refused."""
import pytest

from dataengine.errors import RecipeError
from dataengine.recipe import parse_recipe
from dataengine.tokenize.fit import ensure_tokenizers, fit_tokenizers, fitted_state
from dataengine.tokenize.registry import load_tokenizer


def recipe(root, toks, **sensor_params):
    return parse_recipe({
        "name": "t", "sources": [{"name": "s", "path": str(root)}], "tokenizers_dir": str(toks),
        "tokenizers": {"text": {"family": "bpe", "params": {"vocab_size": 300}},
                       "sensor": {"family": "sensor_bins", "params": sensor_params}},
    })


@pytest.fixture
def corpus(tmp_path):
    root = tmp_path / "in"
    (root / "docs").mkdir(parents=True)
    for i in range(5):
        (root / "docs" / f"d{i}.txt").write_text(f"document number {i} talks about walking and running. " * 5)
    (root / "s").mkdir()
    (root / "s" / "w.csv").write_text("t,ax,ay\n" + "".join(f"{i / 10},{i % 7},{-i % 3}\n" for i in range(40)))
    (root / "s" / "w.json").write_text('{"label": "walking"}')
    return root


def test_fit_writes_every_role_and_sees_labels(corpus, tmp_path):
    toks = tmp_path / "toks"
    r = recipe(corpus, toks)
    summary = fit_tokenizers(r, toks, log=lambda *_: None)
    assert set(summary) == {"text", "sensor"}
    text = load_tokenizer(toks / "text")
    assert text.decode(text.encode("walking")[0], {}) == "walking"
    assert summary["sensor"]["items"] == 1 and (toks / "sensor" / "card.yaml").is_file()
    assert all(fitted_state(r, toks, role) == "ok" for role in ("text", "sensor"))
    import json

    for role in ("text", "sensor"):  # a held-out eval beside every fitted tokenizer
        ev = json.loads((toks / role / "eval.json").read_text())
        assert ev["family"] == {"text": "bpe", "sensor": "sensor_bins"}[role]
        assert "error" in ev or ev["items"] > 0


def test_stale_tokenizers_are_refused_with_the_fix(corpus, tmp_path):
    toks = tmp_path / "toks"
    fit_tokenizers(recipe(corpus, toks), toks, log=lambda *_: None)
    changed = recipe(corpus, toks, n_bins=64)
    assert "params differ" in fitted_state(changed, toks, "sensor")
    with pytest.raises(RecipeError, match="--force"):
        ensure_tokenizers(changed, toks, log=lambda *_: None)


def test_missing_tokenizers_are_fitted_and_empty_modalities_explain(corpus, tmp_path):
    toks = tmp_path / "toks"
    r = recipe(corpus, toks)
    ensure_tokenizers(r, toks, log=lambda *_: None)
    assert fitted_state(r, toks, "text") == "ok"
    (corpus / "s" / "w.csv").unlink()
    (corpus / "s" / "w.json").unlink()
    with pytest.raises(RecipeError, match="remove tokenizers.sensor"):
        fit_tokenizers(r, tmp_path / "other", log=lambda *_: None)


def test_refit_with_one_seed_gives_identical_weights(tmp_path):
    import numpy as np
    from PIL import Image

    root = tmp_path / "in"
    (root / "img").mkdir(parents=True)
    rng = np.random.default_rng(0)
    for i in range(6):
        base = rng.integers(0, 255, (4, 4, 3), dtype=np.uint8)
        Image.fromarray(base).resize((48, 48), Image.BICUBIC).save(root / "img" / f"p{i}.png")
        (root / "img" / f"p{i}.txt").write_text(f"a smooth blob number {i}")
    r = parse_recipe({
        "name": "t", "seed": 3, "sources": [{"name": "s", "path": str(root)}],
        "tokenizers": {"text": {"family": "bpe", "params": {"vocab_size": 280}},
                       "image": {"family": "fsq_image",
                                 "params": {"size": 32, "channels": 16, "steps": 12, "batch_size": 4}}},
    })
    a = fit_tokenizers(r, tmp_path / "a", log=lambda *_: None)
    b = fit_tokenizers(r, tmp_path / "b", log=lambda *_: None)
    for role in ("text", "image"):
        assert a[role]["weights_sha256"] == b[role]["weights_sha256"]
    assert (tmp_path / "a" / "image" / "weights.safetensors").read_bytes() == \
        (tmp_path / "b" / "image" / "weights.safetensors").read_bytes()


def split_recipe(fraction: float, seed: int = 0):
    return parse_recipe({
        "name": "t", "seed": seed, "sources": [{"name": "s", "path": "."}],
        "tokenizers": {"text": {"family": "bpe", "params": {}}},
        "fit": {"holdout_fraction": fraction},
    })


def fake_units(counts: dict[str, int]) -> list:
    from dataengine.discover import Unit, unit_id

    return [Unit(unit_id("s", f"{kind}/{i}.x"), "s", "/", kind, f"{kind}/{i}.x")
            for kind, n in counts.items() for i in range(n)]


def test_holdout_is_stratified_by_modality_seeded_and_a_partition():
    from dataengine.tokenize.samples import is_heldout, split_units

    units = fake_units({"image": 40, "video": 3, "audio": 2, "jsonl": 1})
    fit, held = split_units(split_recipe(0.05), units)
    assert sorted(u.unit_id for u in fit + held) == sorted(u.unit_id for u in units)
    assert not {u.unit_id for u in fit} & {u.unit_id for u in held}
    kinds = {u.kind for u in held}
    assert {"image", "video", "audio"} <= kinds and "jsonl" not in kinds  # 1 group: nothing to hold out
    for kind in ("video", "audio"):  # too few for the hash alone: exactly one group each
        assert sum(u.kind == kind for u in held) == 1
    hashed = {u.unit_id for u in units if is_heldout(0, u.unit_id, 0.05)}
    assert hashed <= {u.unit_id for u in held}  # the hash's choice always stands
    again = split_units(split_recipe(0.05), list(reversed(units)))[1]
    assert {u.unit_id for u in again} == {u.unit_id for u in held}  # order does not matter
    other = split_units(split_recipe(0.05, seed=1), units)[1]
    assert {u.unit_id for u in other} != {u.unit_id for u in held}
    assert split_units(split_recipe(0.0), units)[1] == []


def test_holdout_of_a_modality_is_stable_when_the_corpus_grows():
    from dataengine.tokenize.samples import split_units

    small = fake_units({"image": 60, "video": 4})
    grown = small + fake_units({"image": 90, "sensor": 5})[60:]
    held_small = {u.unit_id for u in split_units(split_recipe(0.1), small)[1] if u.kind == "image"}
    held_grown = {u.unit_id for u in split_units(split_recipe(0.1), grown)[1] if u.kind == "image"}
    assert held_small and held_small <= held_grown
