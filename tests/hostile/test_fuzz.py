"""The quick fuzz set: seeded mutants of every kind of valid media decode as a run decodes them, with
no crash, hang, blow-up or lost input (bench/fuzz.py runs thousands)."""
from __future__ import annotations

import pytest
from hostile.fuzz import MUTATIONS, check, seeds, write_corpus

from dataengine.pipeline.budget import WatchedDecode
from dataengine.pipeline.decode_stage import DecodeStage
from dataengine.recipe import Decode, DecodeBudget

MODALITIES = frozenset({"image", "audio", "video", "sensor", "text"})


@pytest.fixture(scope="module")
def fuzzed(tmp_path_factory):
    base = tmp_path_factory.mktemp("fuzz")
    made = write_corpus(seeds(base / "seeds"), base / "fuzz", per_seed=3, seed=14)
    # the demo's caps, and budgets a healthy small file never comes near
    stage = DecodeStage(decode=Decode(budget=DecodeBudget(wall_s=20, cpu_s=20, memory_mb=1024)), sizes={"image": 32},
                        modalities=MODALITIES)
    watched = WatchedDecode(stage)
    try:
        return made, check(base / "fuzz", stage, watched)
    finally:
        watched.close()


def test_every_mutation_of_every_kind_was_tried(fuzzed):
    made, _ = fuzzed
    assert set(made.values()) == set(MUTATIONS)
    assert {p.rsplit(".", 1)[1] for p in made} >= {"png", "jpg", "wav", "flac", "mp4", "webm", "avi", "csv", "npy",
                                                   "parquet", "json", "txt", "jsonl", "tar"}


def test_no_crash_hang_blow_up_or_lost_input(fuzzed):
    made, result = fuzzed
    assert result["inputs"] >= len(made) and result["units"] > 0
    assert result["bugs"] == []
    rejected = sum(n for r, n in result["reasons"].items() if r != "ok")
    assert rejected > len(made) // 4 and result["reasons"].get("ok", 0) > 0  # most mutants break, some survive
