"""Per-item budgets: a unit decoded in the watched child gives exactly the in-process rows; one that
stalls, spins or grows past decode.budget is killed and rejected naming the budget; a child that dies
on its own is tried again, then decoder_crashed; the worker itself always survives."""
from __future__ import annotations

import dataclasses
import os
import signal
from pathlib import Path

import pyarrow as pa
import pytest
from corpus_factory import make_mixed_corpus

import dataengine.pipeline.budget as budget_mod
from dataengine.discover import discover
from dataengine.errors import RecipeError
from dataengine.pipeline.budget import STRAIN_ENV, WatchedDecode
from dataengine.pipeline.decode_stage import DecodeStage
from dataengine.recipe import Decode, DecodeBudget, load_recipe

MODALITIES = frozenset({"image", "audio", "video", "sensor", "text"})


@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> list[dict]:
    root = tmp_path_factory.mktemp("budget")
    make_mixed_corpus(root)
    found = discover([("demo", root)], max_file_bytes=Decode().max_file_bytes)
    return [u.to_row() for u in found.units]


def _stage(**budget) -> DecodeStage:
    return DecodeStage(decode=Decode(budget=DecodeBudget(**budget)), sizes={"image": 32}, modalities=MODALITIES)


def _decode(stage, units, watched) -> list[dict]:
    return stage(pa.Table.from_pylist(units), run_unit=watched).to_pylist()


def test_the_child_decodes_exactly_what_the_worker_would(corpus):
    stage = _stage()
    watched = WatchedDecode(stage)
    try:
        assert _decode(stage, corpus, watched) == _decode(stage, corpus, None)
        pid = watched._proc.pid
        _decode(stage, corpus[:2], watched)
        assert watched._proc.pid == pid  # one child for every unit while none is killed
    finally:
        watched.close()


@pytest.mark.parametrize("how, budget, reason", [
    ("sleep", {"wall_s": 1.0}, "over_wall_budget"),
    ("spin", {"wall_s": 30.0, "cpu_s": 1.0}, "over_cpu_budget"),
    ("alloc", {"wall_s": 30.0, "memory_mb": 300}, "over_memory_budget"),
])
def test_a_unit_over_its_budget_is_killed_and_rejected_naming_it(corpus, monkeypatch, how, budget, reason):
    victim = next(u for u in corpus if u["kind"] == "image" and u["caption"])
    units = [u for u in corpus if u["kind"] in ("text", "sensor")][:3] + [victim, corpus[-1]]
    monkeypatch.setenv(STRAIN_ENV, f"{how}:{victim['media']}")
    stage = _stage(**budget)
    watched = WatchedDecode(stage)
    try:
        rows = _decode(stage, units, watched)
    finally:
        watched.close()
    bad = [(r["path"], r["reason"]) for r in rows if r["status"] == "reject" and r["stage"] == "decode"
           and r["reason"] not in ("corrupt", "truncated")]
    assert (victim["media"], reason) in bad and (victim["caption"], "media_rejected") in bad
    detail = next(r["detail"] for r in rows if r["path"] == victim["media"])
    assert "decode.budget." + {"over_wall_budget": "wall_s", "over_cpu_budget": "cpu_s",
                               "over_memory_budget": "memory_mb"}[reason] in detail
    others = [r for r in rows if r["path"] not in (victim["media"], victim["caption"])]
    monkeypatch.delenv(STRAIN_ENV)
    assert len(others) >= 4  # the units after the victim ran in a fresh child
    assert others == [r for r in _decode(stage, units, None) if r["path"] not in (victim["media"], victim["caption"])]


def test_a_child_that_dies_on_its_own_is_retried_then_the_unit_is_decoder_crashed(corpus, monkeypatch):
    watched = WatchedDecode(_stage(), max_crashes=2)
    victim, children = corpus[0], set()
    real_send = budget_mod._send

    def send_then_crash(fd, payload):  # the child dies on the victim, as a native decoder's segfault would
        real_send(fd, payload)
        children.add(watched._proc.pid)
        if b'"unit_id"' in payload and victim["media"].encode() in payload:
            os.kill(watched._proc.pid, signal.SIGSEGV)

    monkeypatch.setattr(budget_mod, "_send", send_then_crash)
    try:
        rows = watched(victim)
        assert rows[0]["reason"] == "decoder_crashed" and "2 times" in rows[0]["detail"]
        assert "SIGSEGV" in rows[0]["detail"] and len(children) == 2  # tried again in a fresh child
        monkeypatch.setattr(budget_mod, "_send", real_send)
        assert watched(corpus[1])[0]["status"] == "ok"  # and a fresh one for the next unit
    finally:
        watched.close()


def test_bad_budgets_fail_before_any_work(tmp_path):
    from corpus_factory import tiny_recipe

    path = tiny_recipe(tmp_path, decode={"budget": {"memory_mb": 8}})
    with pytest.raises(RecipeError, match="decode.budget"):
        load_recipe(path, inputs=[str(tmp_path)])
    recipe = load_recipe(tiny_recipe(tmp_path, decode={"budget": {"wall_s": 5}}), inputs=[str(tmp_path)])
    assert dataclasses.asdict(recipe.decode.budget) == {"wall_s": 5, "cpu_s": 120.0, "memory_mb": 2048, "watch": True}
    assert Path(tmp_path).exists()
