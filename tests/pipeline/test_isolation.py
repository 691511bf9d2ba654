"""A sample that hard-crashes its worker every time, decoding (decoder_crashed) or tokenizing
(tokenizer_crashed), is rejected; the run still finishes."""
import os
import subprocess
import sys
from collections import Counter

import polars as pl
import pytest

from corpus_factory import TINY_TOKENIZERS, make_duplicates_corpus, tiny_recipe
from dataengine.errors import RecipeError
from dataengine.pipeline.isolation import CRASH_ENV, TOKENIZE_CRASH_ENV, CrashLedger
from dataengine.pipeline.items import TOKENIZE_STRAIN_ENV
from dataengine.recipe import load_recipe

CRASHER = "chelsea.png"  # its caption chelsea.txt must be rejected with it
TOKENIZE_CRASHER = "rocket.png"  # decodes fine, kills the worker while tokenizing; rocket.txt goes with it
STALLER = "coffee.png"  # tokenizing it never returns: the watchdog kills the worker over decode.budget.wall_s


# ---------------------------------------------------------------------------------------- attribution
def test_a_dead_careful_attempt_charges_only_the_unit_it_was_decoding():
    led = CrashLedger(max_crashes=2)
    batch = ["u1", "u2", "u3"]
    assert led.begin("a1", batch)["careful"] is False  # a healthy batch reports no unit
    led.started("a1", "u2")  # (not sent by a fast attempt: the ledger must not rely on it)
    v = led.begin("a2", batch, where="pid 5")  # a1 died: its units are suspects, nobody is charged yet
    assert v == {"reject": {}, "crashes": {}, "sites": {}, "stages": {}, "careful": True} and led.summary() == {}
    led.started("a2", "u1")
    led.started("a2", "u2")  # dies here: u1 was done, u3 never reached
    v = led.begin("a3", batch, where="pid 7")
    assert led.summary() == {"u2": 1} and v["reject"] == {} and v["careful"] is True
    led.started("a3", "u1")
    led.started("a3", "u2")  # dies again
    v = led.begin("a4", batch)
    assert v["reject"] == {"u2": 2} and v["sites"] == {"u2": ["pid 5", "pid 7"]} and led.summary() == {"u2": 2}
    assert v["careful"] is True  # u1 and u3 are still suspects
    led.started("a4", "u1")
    led.started("a4", "u3")  # u2 is rejected, not decoded
    led.finished("a4")
    assert led.begin("a5", batch)["reject"] == {"u2": 2}  # a finished attempt is charged nothing
    assert led.summary() == {"u2": 2}


def test_finished_running_and_empty_attempts_are_not_charged():
    led = CrashLedger(max_crashes=1)
    led.begin("a", ["u1", "u2"])
    led.finished("a")
    assert led.begin("b", ["u1", "u2"])["careful"] is False  # `a` finished; its output was lost and recomputed
    led.finished("b")
    led.begin("c", ["u3", "u4"])
    led.begin("d", ["u5"])
    assert not led.suspects  # another batch does not settle `c`, still running
    assert led.begin("c2", ["u3", "u4"])["careful"] and led.suspects == {"u3", "u4"}
    led.begin("e", ["u6"])  # careful or not, dies before starting any unit: nothing to charge
    led.begin("e2", ["u6"])
    led.started("c2", "u4")
    v = led.begin("f", ["u6", "u4", "u3"])  # batches re-cut: `c2` (holding u3, u4) and `e2` (u6) are dead
    assert led.summary() == {"u4": 1} and v["reject"] == {"u4": 1} and v["careful"] is True


def test_a_crash_while_tokenizing_is_charged_to_that_unit_with_its_stage():
    led = CrashLedger(max_crashes=2)
    batch = ["u1", "u2"]
    led.begin("a1", batch)  # dies somewhere: suspects
    for attempt, nxt in (("a2", "a3"), ("a3", "a4")):
        assert led.begin(attempt, batch)["careful"] is True
        led.started(attempt, "u1")
        led.started(attempt, "u2")
        led.started(attempt, None)  # both decoded
        led.started(attempt, "u1", "tokenize")
        led.started(attempt, "u2", "tokenize")  # dies tokenizing u2
    v = led.begin("a4", batch)
    assert v["reject"] == {"u2": 2} and v["stages"] == {"u2": "tokenize"} and led.summary() == {"u2": 2}
    led.started("a4", "u1", "tokenize")
    led.started("a4", None)  # tokenized everything, dies writing its part: nobody is charged
    assert led.begin("a5", batch)["reject"] == {"u2": 2} and led.summary() == {"u2": 2}


def test_max_unit_crashes_is_validated(tmp_path):
    path = tiny_recipe(tmp_path, execution={"max_unit_crashes": 0})
    with pytest.raises(RecipeError, match="max_unit_crashes"):
        load_recipe(path, inputs=[str(tmp_path)])


# ---------------------------------------------------------------------------------------- a real run
@pytest.fixture(scope="module")
def run(tmp_path_factory):
    base = tmp_path_factory.mktemp("isolation")
    corpus = base / "corpus"
    make_duplicates_corpus(corpus)
    tokenizers = {"text": TINY_TOKENIZERS["text"],
                  "image": {**TINY_TOKENIZERS["image"], "params": {**TINY_TOKENIZERS["image"]["params"], "steps": 5}}}
    # no drops after decode: every input but the crasher and its caption must reach the shards
    recipe_path = tiny_recipe(base, tokenizers=tokenizers, execution={"decode_batch": 4},
                              decode={"budget": {"wall_s": 5}},
                              curate={"filters": {}, "mixture": {"policy": "none"},
                                      "dedup": {"exact": False, "near": False}})
    cmd = [sys.executable, "-m", "dataengine.cli", "run", str(recipe_path), "--input", str(corpus),
           "--output", str(base / "out")]  # its own Ray: the fault injection reaches the workers by env
    env = {**os.environ, CRASH_ENV: CRASHER, TOKENIZE_CRASH_ENV: TOKENIZE_CRASHER, TOKENIZE_STRAIN_ENV: STALLER}
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=300, env=env)
    assert proc.returncode == 0, proc.stderr[-3000:]
    inputs = sorted(p.relative_to(corpus).as_posix() for p in corpus.rglob("*") if p.is_file())
    return {"out": base / "out", "inputs": inputs}


def test_a_sample_that_always_crashes_is_rejected_and_the_run_finishes(run):
    rejects = pl.read_parquet(run["out"] / "rejects.parquet")
    crashed = rejects.filter(pl.col("path") == CRASHER).to_dicts()
    assert [(r["stage"], r["reason"]) for r in crashed] == [("decode", "decoder_crashed")]
    detail = crashed[0]["detail"]
    assert "2 deaths pinned on it" in detail and "pid" in detail and "faulthandler" in detail
    caption = rejects.filter(pl.col("path") == "chelsea.txt").to_dicts()
    assert [(r["stage"], r["reason"]) for r in caption] == [("decode", "media_rejected")]
    assert "decoder_crashed" in caption[0]["detail"]
    assert rejects.height == 6  # its batch-mates were decoded on the retry, not blamed


def test_a_sample_that_always_crashes_its_tokenizer_is_rejected(run):
    rejects = pl.read_parquet(run["out"] / "rejects.parquet")
    crashed = rejects.filter(pl.col("path") == TOKENIZE_CRASHER).to_dicts()
    assert [(r["stage"], r["reason"]) for r in crashed] == [("tokenize", "tokenizer_crashed")]
    assert "2 deaths pinned on it" in crashed[0]["detail"] and "tokenizer worker" in crashed[0]["detail"]
    caption = rejects.filter(pl.col("path") == "rocket.txt").to_dicts()
    assert [(r["stage"], r["reason"]) for r in caption] == [("tokenize", "media_rejected")]


def test_a_sample_whose_tokenizing_never_ends_is_rejected_naming_the_budget(run):
    rejects = pl.read_parquet(run["out"] / "rejects.parquet")
    stalled = rejects.filter(pl.col("path") == STALLER).to_dicts()
    assert [(r["stage"], r["reason"]) for r in stalled] == [("tokenize", "over_wall_budget")]
    assert "decode.budget" in stalled[0]["detail"]
    assert rejects.filter(pl.col("path") == "coffee.txt")["reason"].to_list() == ["media_rejected"]


def test_every_other_sample_is_in_the_shards_exactly_once(run):
    seq = pl.read_parquet(run["out"] / "parquet" / "*.parquet")
    assert seq["id"].n_unique() == seq.height  # a retried batch wrote nothing twice
    uses = Counter(lin["path"] for lins in seq["lineage"].to_list() for lin in lins)
    want = [p for p in run["inputs"]
            if p not in (CRASHER, "chelsea.txt", TOKENIZE_CRASHER, "rocket.txt", STALLER, "coffee.txt")]
    assert len(want) >= 10 and {p: uses[p] for p in want} == dict.fromkeys(want, 1)
    assert set(uses) == set(want)
