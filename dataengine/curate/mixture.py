"""Mixture balancing by tokens: how many copies of each row make the training mixture.

Groups are "source/kind" (e.g. "demo/image"). With n_g the tokens available in group g
and B the budget (default: all available tokens), a policy gives each group a
probability p_g, then a target

    T_g = water-fill(p, caps = max_epochs * n_g, B)

i.e. T_g = B' * p_g / sum(p over uncapped groups), where a group whose share would
exceed its cap gets exactly its cap and the excess is shared by the others in
proportion to their p (repeated until no cap binds). Policies:

    none         every row once; no budget (T_g = n_g)
    weights      p_g from `weights` (normalised); see MixtureConfig for the keys
    temperature  p_g ∝ n_g ** (1 / temperature): T=1 is the natural mixture, larger T flattens it
    unimax       p_g uniform (Chung et al. 2023, UniMax): equal budgets, each capped at
                 max_epochs * n_g, leftover redistributed uniformly to the rest

Rows of a group are taken in a stable pseudo-random order, rank = hash(seed, id): every
row gets floor(T_g / n_g) whole copies (never more than max_epochs allows), then one more
copy for a prefix of the rank order whose token count is closest to the remainder
without exceeding the cap. Because a row's rank never depends on the other rows,
adding rows to a corpus only moves the stopping point: old rows keep their relative order.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
import polars as pl
import pyarrow as pa

from dataengine.config import build
from dataengine.curate.minhash import fmix64
from dataengine.errors import RecipeError

POLICIES = ("none", "weights", "temperature", "unimax")


@dataclass
class MixtureConfig:
    """Token-budget mixture over "source/kind" groups.

    `weights` keys (policy "weights" only): an exact group "source/kind", or a wildcard
    "source/*" (every kind of that source) or "*/kind" (that kind in every source). A
    wildcard's weight is shared by the groups it matches in proportion to their available
    tokens. Every group must be matched by exactly one key (give "src/kind": 0 to drop a
    group on purpose). Weights need not sum to 1; they are normalised.
    """

    policy: str = "none"
    budget_tokens: int | None = None      # None: the total available tokens (a pure re-weighting)
    weights: dict[str, float] = field(default_factory=dict)
    temperature: float = 1.0              # policy "temperature": p_g ∝ n_g ** (1 / temperature)
    max_epochs: float = 4.0               # cap on copies of a group's tokens (4 repeats keep most of the
    #                                       value of fresh data: Muennighoff et al. 2023)
    seed: int = 0

    @classmethod
    def from_dict(cls, d: dict | None) -> "MixtureConfig":
        return build(cls, d, "mixture")

    def validate(self) -> None:
        validate_mixture(self)


@dataclass
class MixturePlan:
    repeats: pl.DataFrame   # id, repeats (0 = dropped)
    drops: pl.DataFrame     # id, reason ("mixture_downsampled"), detail, group
    report: dict            # {"groups": {group: {...}}, "totals": {...}} for stats.json


def _split(key: str) -> tuple[str, str]:
    if not isinstance(key, str) or key.count("/") < 1:
        raise RecipeError(f"mixture.weights key {key!r} is not 'source/kind' (or 'source/*', '*/kind')")
    source, kind = key.rsplit("/", 1)
    if not source or not kind or (source == "*" and kind == "*"):
        raise RecipeError(f"mixture.weights key {key!r}: use 'source/kind', 'source/*' or '*/kind'")
    return source, kind


def _matches(key: str, group: str) -> bool:
    ks, kk = _split(key)
    gs, gk = group.rsplit("/", 1)
    return ks in ("*", gs) and kk in ("*", gk)


def validate_mixture(config: MixtureConfig, groups: list[str] | None = None) -> None:
    """Raise RecipeError (naming the fix) for a config that cannot run; `groups` checks weight keys."""
    c = config
    if c.policy not in POLICIES:
        raise RecipeError(f"mixture.policy={c.policy!r} is unknown; use one of {list(POLICIES)}")
    if c.budget_tokens is not None and (not isinstance(c.budget_tokens, (int, np.integer)) or c.budget_tokens <= 0):
        raise RecipeError(f"mixture.budget_tokens={c.budget_tokens!r}: give a positive integer, or omit it "
                          "to use every available token")
    if c.policy == "none" and c.budget_tokens is not None:
        raise RecipeError("mixture: policy 'none' keeps every row once and takes no budget; use policy "
                          "'temperature' with temperature: 1 to scale the natural mixture to a budget")
    if not (isinstance(c.max_epochs, (int, float)) and math.isfinite(c.max_epochs) and c.max_epochs > 0):
        raise RecipeError(f"mixture.max_epochs={c.max_epochs!r}: give a number > 0 (1 = never repeat a row)")
    if c.policy == "temperature" and not (math.isfinite(c.temperature) and c.temperature > 0):
        raise RecipeError(f"mixture.temperature={c.temperature!r}: give a number > 0 (1 = natural mixture, "
                          "larger = flatter)")
    if c.weights and c.policy != "weights":
        raise RecipeError(f"mixture.weights are only used by policy 'weights' (policy is {c.policy!r}); "
                          "remove them or set policy: weights")
    if c.policy != "weights":
        return
    if not c.weights:
        raise RecipeError("mixture: policy 'weights' needs mixture.weights, e.g. {'demo/image': 0.5, '*/text': 0.5}")
    for key, w in c.weights.items():
        _split(key)
        if not isinstance(w, (int, float)) or not math.isfinite(w) or w < 0:
            raise RecipeError(f"mixture.weights[{key!r}]={w!r}: weights are finite numbers >= 0")
    if sum(c.weights.values()) <= 0:
        raise RecipeError("mixture.weights sum to 0; give at least one group a positive weight")
    if groups is None:
        return
    groups = sorted(set(groups))
    for key in c.weights:
        if not any(_matches(key, g) for g in groups):
            raise RecipeError(f"mixture.weights key {key!r} matches no group; groups present: {groups}")
    for g in groups:
        hits = [k for k in c.weights if _matches(k, g)]
        if len(hits) != 1:
            why = "no key" if not hits else f"several keys {hits}"
            raise RecipeError(f"mixture: group {g!r} is matched by {why}; every group needs exactly one "
                              f"weight key (add '{g}': 0 to drop it on purpose)")


def stable_rank(ids: pl.Series | list[str], seed: int) -> np.ndarray:
    """uint64 hash of (seed, id) for every id: independent of the other ids, of Polars/NumPy versions
    and of the machine. Vectorised over the ids' UTF-8 bytes (a position-keyed sum of mixed bytes)."""
    series = ids if isinstance(ids, pl.Series) else pl.Series("id", list(ids), dtype=pl.String)
    if series.null_count():
        raise ValueError("stable_rank: ids must be non-null")
    arr = series.cast(pl.String).to_arrow()
    if isinstance(arr, pa.ChunkedArray):
        arr = arr.combine_chunks()
    arr = arr.cast(pa.large_string())
    offsets = np.frombuffer(arr.buffers()[1], dtype=np.int64)[arr.offset : arr.offset + len(arr) + 1]
    data = np.frombuffer(arr.buffers()[2], dtype=np.uint8) if len(arr) and offsets[-1] > offsets[0] \
        else np.zeros(0, np.uint8)
    data = data[offsets[0] : offsets[-1]].astype(np.uint64)
    lengths = np.diff(offsets)
    pos = np.arange(len(data), dtype=np.int64) - np.repeat(offsets[:-1] - offsets[0], lengths)
    terms = fmix64((pos.astype(np.uint64) << np.uint64(8)) + data + np.uint64(0x1234567))
    sums = np.zeros(len(arr), dtype=np.uint64)
    nonempty = lengths > 0
    if nonempty.any():
        starts = (offsets[:-1] - offsets[0])[nonempty]
        sums[nonempty] = np.add.reduceat(terms, starts)
    salt = fmix64(np.array([(seed * 0x9E3779B97F4A7C15 + 1) % (1 << 64)], dtype=np.uint64))[0]
    return fmix64(sums ^ salt ^ lengths.astype(np.uint64))


def _water_fill(p: np.ndarray, caps: np.ndarray, budget: float) -> np.ndarray:
    """Targets proportional to p summing to budget, none above its cap, excess redistributed."""
    t = np.zeros(len(p))
    active = p > 0
    remaining = float(budget)
    while active.any() and remaining > 0:  # at most one pass per group
        share = remaining * p * active / p[active].sum()
        over = active & (share >= caps)
        if not over.any():
            t[active] = share[active]
            break
        t[over] = caps[over]
        remaining -= caps[over].sum()
        active &= ~over
    return t


def _probabilities(config: MixtureConfig, names: list[str], avail: np.ndarray) -> np.ndarray:
    if config.policy == "temperature":
        return avail ** (1.0 / config.temperature)
    if config.policy == "unimax":
        return (avail > 0).astype(np.float64)
    if config.policy == "weights":
        p = np.zeros(len(names))
        for key, w in config.weights.items():  # a loop over weight keys
            hit = np.array([_matches(key, g) for g in names])
            p[hit] += float(w) * avail[hit] / max(avail[hit].sum(), 1.0)
        return p
    return avail.astype(np.float64)  # "none"


def plan_mixture(df: pl.DataFrame, config: MixtureConfig) -> MixturePlan:
    """Copies of every row (`id`, `group`, `num_tokens`) so the mixture meets the policy's targets."""
    missing = [c for c in ("id", "group", "num_tokens") if c not in df.columns]
    if missing:
        raise ValueError(f"plan_mixture needs columns id, group, num_tokens; missing {missing}")
    rows = df.select(pl.col("id").cast(pl.String), pl.col("group").cast(pl.String),
                     pl.col("num_tokens").cast(pl.Int64).fill_null(0))
    names = sorted(rows["group"].unique().to_list())
    validate_mixture(config, names)
    rows = rows.with_columns(_rank=pl.Series(stable_rank(rows["id"], config.seed)),
                             _g=pl.col("group").replace_strict(names, list(range(len(names))),
                                                               return_dtype=pl.Int64))
    rows = rows.sort(["_g", "_rank", "id"])
    g = rows["_g"].to_numpy()
    tok = rows["num_tokens"].to_numpy().astype(np.float64)
    avail = np.bincount(g, weights=tok, minlength=len(names))
    caps = config.max_epochs * avail
    if config.policy == "none":
        target = avail.copy()
    else:
        budget = float(config.budget_tokens if config.budget_tokens is not None else avail.sum())
        target = _water_fill(_probabilities(config, names, avail), caps, budget)
    full = np.where(avail > 0, np.floor(np.minimum(target, caps) / np.maximum(avail, 1) + 1e-9), 0)
    full = np.minimum(full, math.floor(config.max_epochs))
    remainder = target - full * avail                    # tokens still wanted from a partial pass
    room = caps - full * avail                           # ... and the most the cap allows
    # partial pass: prefix of the rank order with cumulative tokens closest to the remainder
    start = np.searchsorted(g, np.arange(len(names)))    # groups are contiguous after the sort
    cum = np.cumsum(tok) - np.repeat(np.r_[0.0, np.cumsum(tok)][start], np.bincount(g, minlength=len(names)))
    err = np.where(cum <= room[g] + 1e-6, np.abs(cum - remainder[g]), np.inf)
    best_end = np.full(len(names), -1)                   # last position taken in each group (-1: none)
    if len(rows):
        nonempty = np.bincount(g, minlength=len(names)) > 0
        min_err = np.full(len(names), np.inf)
        min_err[nonempty] = np.minimum.reduceat(err, start[nonempty])
        first_min = np.flatnonzero(err == min_err[g])    # positions reaching their group's min
        grp, first = np.unique(g[first_min], return_index=True)
        take = np.full(len(names), -1)
        take[grp] = first_min[first]                     # the earliest of them per group
        best_end = np.where(min_err < remainder - 1e-9, take, -1)
    pos = np.arange(len(rows))
    extra = (best_end[g] >= 0) & (pos <= best_end[g])
    repeats = (full[g] + extra).astype(np.int64)
    achieved = np.bincount(g, weights=tok * repeats, minlength=len(names))
    result = rows.select("id", "group").with_columns(repeats=pl.Series(repeats))
    dropped = result.filter(pl.col("repeats") == 0)
    gi = {n: i for i, n in enumerate(names)}
    details = [f"group {grp}: target {target[gi[grp]]:,.0f} of {avail[gi[grp]]:,.0f} available tokens "
               f"(policy {config.policy}); this row ranked beyond the cut" for grp in dropped["group"].to_list()]
    drops = pl.DataFrame({"id": dropped["id"], "reason": ["mixture_downsampled"] * dropped.height,
                          "detail": details, "group": dropped["group"]},
                         schema={"id": pl.String, "reason": pl.String, "detail": pl.String, "group": pl.String})
    return MixturePlan(result.select("id", "repeats"), drops, _report(config, names, avail, target, achieved))


def _report(config, names, avail, target, achieved) -> dict:
    tt, ta = max(target.sum(), 1e-12), max(achieved.sum(), 1e-12)
    groups = {n: {"available_tokens": int(avail[i]), "target_tokens": int(round(target[i])),
                  "achieved_tokens": int(achieved[i]),
                  "available_share": float(avail[i] / max(avail.sum(), 1e-12)),
                  "target_share": float(target[i] / tt), "achieved_share": float(achieved[i] / ta),
                  "epochs": float(achieved[i] / avail[i]) if avail[i] else 0.0}
              for i, n in enumerate(names)}
    return {"policy": config.policy, "groups": groups, "totals": {
        "budget_tokens": config.budget_tokens, "available_tokens": int(avail.sum()),
        "target_tokens": int(round(target.sum())), "achieved_tokens": int(achieved.sum()),
        "max_epochs": config.max_epochs, "temperature": config.temperature if config.policy == "temperature" else None,
        "seed": config.seed}}


RANK_BITS = 12  # a partial pass takes whole rank bins: 4,096 per group (a cut within 1/4096 of a group's tokens)


def rank_bins(ids: pl.Series | list[str], seed: int) -> np.ndarray:
    """The rank bin of each id: the top RANK_BITS bits of `stable_rank` (rows of a bin are taken together)."""
    return (stable_rank(ids, seed) >> np.uint64(64 - RANK_BITS)).astype(np.int64)


def plan_from_histogram(names: list[str], hist: np.ndarray, config: MixtureConfig) -> dict:
    """The mixture as a plan: per group, whole copies and a rank-bin cut, from tokens per (group, rank bin).

    `hist[g, b]` is the train tokens of group g whose rows fall in rank bin b (`rank_bins`); the only
    thing a driver needs to sum. A row of group g gets `full[g]` copies, plus one more when its bin is
    below `cut[g]`: the same rule as `plan_mixture` with the prefix taken in whole bins.
    """
    validate_mixture(config, names)
    hist = np.asarray(hist, dtype=np.float64).reshape(len(names), 1 << RANK_BITS)
    avail = hist.sum(axis=1)
    caps = config.max_epochs * avail
    if config.policy == "none":
        target = avail.copy()
    else:
        budget = float(config.budget_tokens if config.budget_tokens is not None else avail.sum())
        target = _water_fill(_probabilities(config, names, avail), caps, budget)
    full = np.where(avail > 0, np.floor(np.minimum(target, caps) / np.maximum(avail, 1) + 1e-9), 0)
    full = np.minimum(full, math.floor(config.max_epochs))
    remainder, room = target - full * avail, caps - full * avail
    taken = np.concatenate([np.zeros((len(names), 1)), np.cumsum(hist, axis=1)], axis=1)  # tokens of bins < c
    err = np.where(taken <= room[:, None] + 1e-6, np.abs(taken - remainder[:, None]), np.inf)
    cut = err.argmin(axis=1) if len(names) else np.zeros(0, np.int64)  # ties: fewer bins (c=0 takes none)
    achieved = full * avail + taken[np.arange(len(names)), cut]
    return {"names": list(names), "full": full.astype(np.int64).tolist(), "cut": cut.astype(np.int64).tolist(),
            "target": target.tolist(), "available": avail.tolist(), "policy": config.policy, "seed": config.seed,
            "report": _report(config, names, avail, target, achieved)}


def copies_from_plan(groups: list[str], bins: np.ndarray, plan: dict) -> np.ndarray:
    """Copies of each train row (group, rank bin) under `plan_from_histogram`'s plan."""
    index = {g: i for i, g in enumerate(plan["names"])}
    g = np.array([index[x] for x in groups], dtype=np.int64)
    full, cut = np.asarray(plan["full"], np.int64), np.asarray(plan["cut"], np.int64)
    return (full[g] + (np.asarray(bins) < cut[g])).astype(np.int64) if len(g) else np.zeros(0, np.int64)
