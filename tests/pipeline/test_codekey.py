"""The candidates cache key sees the code that computes the rows (dataengine.pipeline.codekey)."""
import shutil

from corpus_factory import tiny_recipe
from dataengine.pipeline import cache, codekey
from dataengine.recipe import load_recipe


def test_the_closure_holds_the_row_makers_and_not_what_runs_after_them():
    mods = codekey.closure()
    for m in ("dataengine.decode.image", "dataengine.decode.video", "dataengine.tokenize.text_bpe",
              "dataengine.curate.stats", "dataengine.curate.stats_text", "dataengine.compose.sequence",
              "dataengine.vocab", "dataengine.listing", "dataengine.pipeline.budget"):
        assert m in mods, m
    for m in ("dataengine.curate.distributed", "dataengine.curate.exchange", "dataengine.shards.writer",
              "dataengine.report", "dataengine.train.loop", "dataengine.cli", "dataengine.pipeline.run"):
        assert m not in mods, m


def _copy(tmp_path):
    shutil.copytree(codekey.ROOT / "dataengine", tmp_path / "dataengine",
                    ignore=shutil.ignore_patterns("__pycache__"))
    return tmp_path


def test_a_change_to_a_row_maker_changes_the_digest_and_a_later_stage_does_not(tmp_path):
    root = _copy(tmp_path)
    base = codekey.code_digest(root=root)
    assert base == codekey.code_digest(root=root) == codekey.candidates_code()  # same checkout, same digest
    for rel, changes in (("curate/distributed.py", False), ("shards/writer.py", False),
                         ("curate/stats_text.py", True), ("decode/audio.py", True), ("pipeline/items.py", True),
                         ("modalities/image.py", True), ("modalities/depth/stats.py", True)):  # loaded by name
        f = root / "dataengine" / rel
        old = f.read_bytes()
        f.write_bytes(old + b"\n# an edit\n")
        assert (codekey.code_digest(root=root) != base) is changes, rel
        f.write_bytes(old)
    assert codekey.code_digest(root=root) == base


def test_candidates_key_includes_the_code(tmp_path, monkeypatch):
    recipe = load_recipe(tiny_recipe(tmp_path))
    key = cache.candidates_key(recipe, {}, "listing")
    monkeypatch.setattr(codekey, "candidates_code", lambda: "another checkout")
    assert cache.candidates_key(recipe, {}, "listing") != key
