from pathlib import Path

import pytest
import yaml

from dataengine.errors import RecipeError
from dataengine.recipe import load_recipe, parse_recipe

ROOT = Path(__file__).resolve().parents[1]


def base():
    return {"name": "t", "sources": [{"name": "a", "path": "x"}],
            "tokenizers": {"text": {"family": "bpe"}}}


def test_demo_recipe_loads_and_resolves_relative_paths():
    r = load_recipe(ROOT / "pipelines" / "demo.yaml")
    assert set(r.tokenizers) == {"text", "image", "video", "audio", "sensor"}
    assert r.resolve(r.tokenizers_dir) == ROOT / "tokenizers" / "demo"
    assert r.decode.audio.sample_rate == 16000


def test_inputs_replace_sources(tmp_path):
    (tmp_path / "mine").mkdir()
    r = load_recipe(ROOT / "pipelines" / "demo.yaml", inputs=[str(tmp_path / "mine")])
    assert [(s.name, Path(s.path)) for s in r.sources] == [("mine", tmp_path / "mine")]


@pytest.mark.parametrize("mutate, message", [
    (lambda d: d.update(sed=1), "did you mean 'seed'"),
    (lambda d: d.update(seed="zero"), "seed: expected an integer"),
    (lambda d: d.setdefault("decode", {}).update(audio={"sample_rte": 8000}), "did you mean 'sample_rate'"),
    (lambda d: d["tokenizers"].update(imag={"family": "fsq_image"}), "did you mean 'image'"),
    (lambda d: d["tokenizers"].update(image={"family": "bpe"}), "tokenizes text, not image"),
    (lambda d: d["tokenizers"].update(image={"family": "fsq_imag"}), "fsq_image"),
    (lambda d: d.pop("sources"), "missing required key 'sources'"),
    (lambda d: d.update(output={"val_fraction": 1.5}), "val_fraction"),
    (lambda d: d["tokenizers"].update(video={"family": "frames"}), "built on the image tokenizer"),
    (lambda d: d["tokenizers"].pop("text"), "a `text` tokenizer is required"),
    (lambda d: d.update(curate={"filters": {"image_blurr": {"min": 1}}}), "did you mean 'image_blur'"),
    (lambda d: d.update(curate={"filtres": {}}), "did you mean 'filters'"),
    (lambda d: d.update(curate={"filters": {"text_lang": {"min": 1}}}), r"use \{allow: \[value"),
    (lambda d: d.update(curate={"mixture": {"policy": "unimix"}}), "policy='unimix' is unknown"),
    (lambda d: d.update(curate={"mixture": {"policy": "temperature", "temperature": "hot"}}),
     "temperature: expected a number"),
    (lambda d: d.update(curate={"mixture": {"policy": "weights", "weights": {"b/image": 1.0}}}),
     "SOURCE in"),
    (lambda d: d.update(curate={"dedup": {"num_perm": "many"}}), "num_perm: expected an integer"),
    (lambda d: d.update(compose={"tasks": {"image": {"image_to_captoin": 1.0}}}), "image_to_caption"),
    (lambda d: d.update(compose={"taks": {}}), "did you mean 'tasks'"),
    (lambda d: d.update(execution={"tokenize_actors": -1}), "tokenize_actors"),
    (lambda d: d.update(execution={"item_units": -2}), "item_units"),
])
def test_bad_recipes_fail_with_a_fix(mutate, message):
    d = base()
    mutate(d)
    with pytest.raises(RecipeError, match=message):
        parse_recipe(d)


def test_recipe_hash_changes_with_content():
    a, b = parse_recipe(base()), parse_recipe({**base(), "seed": 1})
    assert a.sha256 != b.sha256 and a.sha256 == parse_recipe(base()).sha256


def test_missing_recipe_file_names_an_example(tmp_path):
    with pytest.raises(RecipeError, match="pipelines/demo.yaml"):
        load_recipe(tmp_path / "nope.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("name: [unclosed")
    with pytest.raises(RecipeError, match="not valid YAML"):
        load_recipe(bad)
    bad.write_text(yaml.safe_dump(["a list"]))
    with pytest.raises(RecipeError, match="YAML mapping"):
        load_recipe(bad)


def test_set_overrides_dotted_keys_and_are_validated():
    r = load_recipe(ROOT / "pipelines" / "demo.yaml",
                    overrides=["curate.filters.image_blur.min=12.5", "curate.mixture.policy=unimax", "seed=3"])
    assert r.curate.filters["image_blur"] == {"min": 12.5}
    assert r.curate.mixture.policy == "unimax" and r.seed == 3
    assert r.curate.filters["image_width"] == {"min": 32}  # the rest of the recipe is kept
    with pytest.raises(RecipeError, match="did you mean 'image_blur'"):
        load_recipe(ROOT / "pipelines" / "demo.yaml", overrides=["curate.filters.image_blurr.min=1"])
    with pytest.raises(RecipeError, match="KEY=VALUE"):
        load_recipe(ROOT / "pipelines" / "demo.yaml", overrides=["curate.filters"])
