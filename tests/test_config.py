"""One typed config (dataengine.config): the same checks and errors for recipes, the trainer and every
sub-config, and `--set` errors that are one line, before any work."""
import subprocess
import sys
from dataclasses import dataclass, field
from typing import Literal

import pytest

from corpus_factory import tiny_recipe
from dataengine import config
from dataengine.curate.dedup import DEFAULT_NGRAM, DedupConfig
from dataengine.errors import RecipeError
from dataengine.recipe import load_recipe
from dataengine.train.config import load_config


@dataclass
class Inner:
    mode: Literal["fast", "slow"] = "fast"
    rate: float = 0.5
    names: list[str] | None = None
    per_kind: dict[str, int] = field(default_factory=lambda: {"a": 1, "b": 2}, metadata={"merge": True})

    def validate(self):
        if self.rate > 1:
            raise RecipeError(f"inner.rate={self.rate}: at most 1")


@dataclass
class Outer:
    steps: int = 1
    inner: Inner = field(default_factory=Inner)


@pytest.mark.parametrize("data,message", [
    ({"stpes": 3}, "x: unknown key 'stpes'; did you mean 'steps'?"),
    ({"steps": "abc"}, "x.steps: expected an integer, got 'abc'"),
    ({"steps": True}, "x.steps: expected an integer, got True"),
    ({"inner": {"mode": "fsat"}}, "x.inner.mode: expected one of ['fast', 'slow'], got 'fsat' (did you mean 'fast'?)"),
    ({"inner": {"names": "chat"}}, "x.inner.names: expected a list, got str ('chat')"),
    ({"inner": {"rate": "quick"}}, "x.inner.rate: expected a number, got 'quick'"),
    ({"inner": {"rate": 3}}, "inner.rate=3.0: at most 1"),           # validate() runs as the section is read
    ({"inner": {"per_kind": {"a": "x"}}}, "x.inner.per_kind.a: expected an integer"),
    ({"inner": 3}, "x.inner: expected a mapping"),
])
def test_build_names_the_key_the_type_and_the_fix(data, message):
    with pytest.raises(RecipeError) as e:
        config.build(Outer, data, "x")
    assert message in str(e.value)


def test_build_coerces_merges_and_keeps_defaults():
    got = config.build(Outer, {"inner": {"rate": "1e-1", "names": ["chat"], "per_kind": {"b": 5, "c": 7}}}, "x")
    assert got == Outer(1, Inner("fast", 0.1, ["chat"], {"a": 1, "b": 5, "c": 7}))
    assert config.build(Outer, None, "x") == Outer()
    d = config.override({}, "inner.per_kind.b=9")
    assert d == {"inner": {"per_kind": {"b": 9}}}
    with pytest.raises(RecipeError, match="use KEY=VALUE"):
        config.override({}, "inner.rate")


def test_a_partial_dedup_section_is_merged_the_same_way_on_every_path(tmp_path):
    direct = DedupConfig.from_dict({"ngram": {"text": 7}})
    recipe = load_recipe(tiny_recipe(tmp_path), overrides=["curate.dedup.ngram.text=7"])
    assert direct.ngram == recipe.curate.dedup.ngram == {**DEFAULT_NGRAM, "text": 7}
    with pytest.raises(RecipeError, match=r"dedup.threshold\['image'\]=7.0: use an estimated Jaccard in \(0, 1\]"):
        load_recipe(tiny_recipe(tmp_path), overrides=["curate.dedup.threshold.image=7"])


def test_trainer_overrides_are_typed():
    assert load_config("trainer/tiny.yaml", ["data.tasks=[chat]"]).data.tasks == ["chat"]
    assert load_config("trainer/tiny.yaml", ["optim.lr=1e-3"]).optim.lr == 1e-3
    for item, message in (("run.steps=abc", "run.steps: expected an integer, got 'abc'"),
                          ("data.tasks=chat", "data.tasks: expected a list"),
                          ("run.dtype=fp16", "run.dtype: expected one of ['float32', 'bfloat16']"),
                          ("model.n_layer=3", "did you mean 'n_layers'?")):
        with pytest.raises(RecipeError) as e:
            load_config("trainer/tiny.yaml", [item])
        assert message in str(e.value), item


@pytest.mark.parametrize("argv,key", [
    (["train", "trainer/tiny.yaml", "--shards", "{out}", "--set", "run.steps=abc"], "run.steps"),
    (["run", "{recipe}", "--output", "{out}", "--set", "curate.dedup.threshold.image=7"], "dedup.threshold"),
])
def test_the_cli_says_one_line_before_any_work(tmp_path, argv, key):
    recipe = tiny_recipe(tmp_path)
    out = tmp_path / "out"
    args = [a.format(out=out, recipe=recipe) for a in argv]
    p = subprocess.run([sys.executable, "-m", "dataengine.cli", *args], capture_output=True, text=True, timeout=120)
    lines = [ln for ln in p.stderr.splitlines() if ln.strip()]
    assert p.returncode != 0 and len(lines) == 1 and key in lines[0], p.stderr
    assert "Traceback" not in p.stderr and not out.exists()  # nothing was started, nothing written
