"""Token-budget mixtures: exact target arithmetic, achieved shares, stability, caps, validation."""
from __future__ import annotations

import math

import numpy as np
import polars as pl
import pytest

from dataengine.curate.mixture import MixtureConfig, plan_mixture, stable_rank, validate_mixture
from dataengine.errors import RecipeError

GROUPS = {"web/text": 3000, "books/text": 800, "web/image": 1500, "cams/video": 300, "pod/audio": 600,
          "lab/sensor": 25}  # rows per group; lab/sensor is tiny so caps bind


def corpus(seed=0, groups=GROUPS, prefix="r"):
    rng = np.random.default_rng(seed)
    names = [g for g, n in groups.items() for _ in range(n)]
    mu = {"text": 6.0, "image": 4.2, "video": 6.5, "audio": 5.5, "sensor": 5.0}
    lengths = [max(1, int(rng.lognormal(mu[g.split("/")[1]], 0.8))) for g in names]
    return pl.DataFrame({"id": [f"{prefix}{i:06d}" for i in range(len(names))], "group": names,
                         "num_tokens": lengths})


def uniform(sizes: dict[str, int], tokens=10):
    names = [g for g, n in sizes.items() for _ in range(n)]
    return pl.DataFrame({"id": [f"u{i:05d}" for i in range(len(names))], "group": names,
                         "num_tokens": [tokens] * len(names)})


def targets(plan):
    return {g: r["target_tokens"] for g, r in plan.report["groups"].items()}


# ---- exact arithmetic on hand-computable cases ---------------------------------------------
def test_temperature_targets_with_a_binding_cap():
    df = uniform({"a/text": 10, "b/text": 40, "c/image": 90})  # n = 100, 400, 900 tokens
    plan = plan_mixture(df, MixtureConfig("temperature", temperature=2.0, max_epochs=2.0))
    # p ∝ sqrt(n) = 10:20:30 of 1400 -> 233.3 > cap 200 for a; the other 1200 split 20:30
    assert targets(plan) == {"a/text": 200, "b/text": 480, "c/image": 720}
    assert {g: r["achieved_tokens"] for g, r in plan.report["groups"].items()} == targets(plan)
    rep = dict(plan.repeats.iter_rows())
    assert {rep[i] for i in df.filter(pl.col("group") == "a/text")["id"]} == {2}


def test_unimax_uniform_budget_with_redistribution():
    df = uniform({"a/text": 10, "b/text": 40, "c/image": 90})
    plan = plan_mixture(df, MixtureConfig("unimax", budget_tokens=1500, max_epochs=1.5))
    # 500 each; a capped at 150 -> 1350/2 = 675 each; b capped at 600 -> c gets 750
    assert targets(plan) == {"a/text": 150, "b/text": 600, "c/image": 750}
    assert plan.report["groups"]["a/text"]["achieved_tokens"] == 150  # 10 rows once + 5 rows twice


def test_weights_with_wildcards_share_by_available_tokens():
    df = uniform({"s1/text": 30, "s2/text": 10, "s1/image": 60})
    plan = plan_mixture(df, MixtureConfig("weights", budget_tokens=1000, weights={"*/text": 1, "s1/image": 1}))
    assert targets(plan) == {"s1/image": 500, "s1/text": 375, "s2/text": 125}
    achieved = {g: r["achieved_tokens"] for g, r in plan.report["groups"].items()}
    # text groups repeat once fully, then a partial pass; ties (370 vs 380) stop at the earlier row
    assert achieved == {"s1/image": 500, "s1/text": 370, "s2/text": 120}
    assert plan.drops.height == 10 and set(plan.drops["group"]) == {"s1/image"}
    d = plan.drops.row(0, named=True)
    assert d["reason"] == "mixture_downsampled" and d["group"] in d["detail"] and "available" in d["detail"]


def test_none_keeps_every_row_once():
    df = corpus()
    plan = plan_mixture(df, MixtureConfig())
    assert (plan.repeats["repeats"] == 1).all() and plan.drops.height == 0


# ---- achieved shares on a realistic corpus -------------------------------------------------
@pytest.mark.parametrize("config", [
    MixtureConfig("temperature", temperature=3.0, max_epochs=3.0),
    MixtureConfig("temperature", temperature=1.0, budget_tokens=400_000),
    MixtureConfig("unimax", budget_tokens=1_500_000, max_epochs=4.0),
    MixtureConfig("weights", weights={"*/text": 0.4, "web/image": 0.2, "cams/video": 0.15, "pod/audio": 0.15,
                                      "lab/sensor": 0.1}, max_epochs=2.0, budget_tokens=1_000_000),
], ids=["temperature3", "temperature1-budget", "unimax", "weights"])
def test_achieved_shares_match_targets_within_2_percent(config):
    df = corpus()
    plan = plan_mixture(df, config)
    groups = plan.report["groups"]
    assert any(r["epochs"] >= config.max_epochs - 1e-9 for r in groups.values()) or config.temperature == 1.0
    for g, r in groups.items():
        assert abs(r["achieved_share"] - r["target_share"]) <= 0.02, (g, r)
        assert r["achieved_tokens"] <= config.max_epochs * r["available_tokens"]
        if r["target_tokens"] > 50_000:
            assert abs(r["achieved_tokens"] - r["target_tokens"]) <= 0.02 * r["target_tokens"], (g, r)
    totals = plan.report["totals"]
    assert abs(totals["achieved_tokens"] - totals["target_tokens"]) <= 0.02 * totals["target_tokens"]
    rep = plan.repeats["repeats"]
    assert rep.max() <= math.ceil(config.max_epochs) and rep.min() >= 0
    achieved = df.join(plan.repeats, on="id").group_by("group").agg(
        (pl.col("num_tokens") * pl.col("repeats")).sum().alias("t"))
    assert dict(achieved.iter_rows()) == {g: r["achieved_tokens"] for g, r in groups.items()}


# ---- stability and determinism -------------------------------------------------------------
def test_downsampling_is_stable_when_the_corpus_grows():
    weights = {"*/text": 0.5, "web/image": 0.2, "cams/video": 0.1, "pod/audio": 0.1, "lab/sensor": 0.1}
    old = corpus(0)
    grown = pl.concat([old, corpus(1, {g: n // 10 + 1 for g, n in GROUPS.items()}, prefix="new")])

    def kept(df, budget):
        plan = plan_mixture(df, MixtureConfig("weights", budget_tokens=budget, seed=7, weights=weights))
        rows = plan.repeats.join(df.select("id", "group"), on="id").filter(pl.col("repeats") > 0)
        return {g: set(rows.filter(pl.col("group") == g)["id"]) for g in GROUPS}

    before, same_budget, more_budget = kept(old, 600_000), kept(grown, 600_000), kept(grown, 660_000)
    n_before = sum(map(len, before.values()))
    for g in GROUPS:  # old rows only move across the cut: the kept sets are nested
        after_old = {i for i in same_budget[g] if i.startswith("r")}
        assert after_old <= before[g] or before[g] <= after_old, g
    # same budget, 10% more rows: the cut moves by ~1/1.1, so ~91% of old keeps stay (ideal)
    assert sum(len(before[g] & same_budget[g]) for g in GROUPS) >= 0.87 * n_before
    # budget grown with the corpus: nearly every old keep stays
    assert sum(len(before[g] & more_budget[g]) for g in GROUPS) >= 0.95 * n_before


def test_deterministic_and_independent_of_row_order():
    df = corpus()
    config = MixtureConfig("unimax", budget_tokens=900_000, max_epochs=2.5, seed=3)
    a = plan_mixture(df, config).repeats.sort("id")
    b = plan_mixture(df.sample(fraction=1.0, shuffle=True, seed=1), config).repeats.sort("id")
    assert a.equals(b)
    c = plan_mixture(df, MixtureConfig("unimax", budget_tokens=900_000, max_epochs=2.5, seed=4)).repeats.sort("id")
    assert not a.equals(c)  # the seed picks another sample


def test_stable_rank_depends_only_on_seed_and_id():
    ids = ["a", "b", "", "é漢", "a" * 300]
    r = stable_rank(ids, 0)
    assert r.dtype == np.uint64 and len(set(r.tolist())) == len(ids)
    assert stable_rank(pl.Series(ids[::-1]), 0).tolist() == r[::-1].tolist()
    assert stable_rank(["b"], 0)[0] == r[1] and stable_rank(["b"], 1)[0] != r[1]


# ---- validation ----------------------------------------------------------------------------
@pytest.mark.parametrize("config,match", [
    (MixtureConfig("mystery"), "unknown"),
    (MixtureConfig("weights"), "needs mixture.weights"),
    (MixtureConfig("weights", weights={"web/text": -1.0}), ">= 0"),
    (MixtureConfig("weights", weights={"web/text": 0.0}), "sum to 0"),
    (MixtureConfig("weights", weights={"webtext": 1.0}), "source/kind"),
    (MixtureConfig("temperature", temperature=0.0), "temperature"),
    (MixtureConfig("unimax", max_epochs=0), "max_epochs"),
    (MixtureConfig("none", budget_tokens=10), "takes no budget"),
    (MixtureConfig("unimax", weights={"web/text": 1.0}), "only used by policy 'weights'"),
    (MixtureConfig("unimax", budget_tokens=-5), "positive integer"),
])
def test_validation_errors_name_the_fix(config, match):
    with pytest.raises(RecipeError, match=match):
        validate_mixture(config)


def test_weight_keys_are_checked_against_groups():
    groups = ["web/text", "web/image", "books/text"]
    with pytest.raises(RecipeError, match="matches no group"):
        validate_mixture(MixtureConfig("weights", weights={"web/text": 1, "nope/*": 1}), groups)
    with pytest.raises(RecipeError, match="matched by no key"):
        validate_mixture(MixtureConfig("weights", weights={"web/*": 1}), groups)
    with pytest.raises(RecipeError, match="several keys"):
        validate_mixture(MixtureConfig("weights", weights={"web/*": 1, "*/text": 1}), groups)
    validate_mixture(MixtureConfig("weights", weights={"web/*": 1, "books/text": 0}), groups)
    with pytest.raises(RecipeError, match="unknown key"):
        MixtureConfig.from_dict({"polciy": "unimax"})
