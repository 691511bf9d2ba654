"""Quality filters: thresholds from the recipe applied to stats computed earlier.

Stats are columns computed once (at decode and tokenize time); a filter is a
threshold on one of them, so re-thresholding never re-decodes. A rule only
applies to rows that have the stat (an image has no `text_chars`), and every
drop names the stat, its value and the rule it broke:

    curate:
      filters:
        image_blur: {min: 20}          # numbers: min and/or max (inclusive bounds)
        text_lang: {allow: [en]}       # strings: the allowed values
        video_has_audio: {equals: true}  # booleans

Output is DataTrove-style: keep, or drop with a reason, and every reason counted.
"""
from __future__ import annotations

import difflib
import math
from dataclasses import dataclass

import numpy as np
import polars as pl
import pyarrow as pa

from dataengine.errors import RecipeError

RULE_KEYS = {"min", "max", "allow", "equals"}


@dataclass(frozen=True)
class Rule:
    stat: str
    min: float | None = None
    max: float | None = None
    allow: tuple[str, ...] | None = None
    equals: bool | None = None


def parse_filters(filters: dict, stat_fields: dict[str, pa.DataType], where: str = "curate.filters") -> list[Rule]:
    """Validate `{stat: {min/max/allow/equals}}` against the known stats; errors name the fix."""
    rules = []
    for stat, spec in (filters or {}).items():
        if stat not in stat_fields:
            close = difflib.get_close_matches(stat, list(stat_fields), n=1)
            hint = f"; did you mean {close[0]!r}?" if close else ""
            raise RecipeError(f"{where}: unknown stat {stat!r}{hint} Known stats: {sorted(stat_fields)}")
        if not isinstance(spec, dict) or not spec:
            raise RecipeError(f"{where}.{stat}: expected a mapping such as {{min: 0.5}}, got {spec!r}")
        bad = set(spec) - RULE_KEYS
        if bad:
            raise RecipeError(f"{where}.{stat}: unknown rule key(s) {sorted(bad)}; use {sorted(RULE_KEYS)}")
        t = stat_fields[stat]
        w = f"{where}.{stat}"
        if pa.types.is_string(t):
            if set(spec) != {"allow"} or not isinstance(spec["allow"], list) or not spec["allow"]:
                raise RecipeError(f"{w}: {stat} is a string stat; use {{allow: [value, ...]}} with at least one value")
            rules.append(Rule(stat, allow=tuple(str(v) for v in spec["allow"])))
        elif pa.types.is_boolean(t):
            if set(spec) != {"equals"} or not isinstance(spec["equals"], bool):
                raise RecipeError(f"{w}: {stat} is a true/false stat; use {{equals: true}} or {{equals: false}}")
            rules.append(Rule(stat, equals=spec["equals"]))
        else:
            if not set(spec) <= {"min", "max"}:
                raise RecipeError(f"{w}: {stat} is a number; use min and/or max, not {sorted(set(spec) - {'min', 'max'})}")
            lo, hi = spec.get("min"), spec.get("max")
            for k, v in (("min", lo), ("max", hi)):
                if v is not None and (isinstance(v, bool) or not isinstance(v, (int, float)) or math.isnan(v)):
                    raise RecipeError(f"{w}.{k}: expected a number, got {v!r}")
            if lo is not None and hi is not None and lo > hi:
                raise RecipeError(f"{w}: min={lo} is above max={hi}; swap them")
            rules.append(Rule(stat, min=None if lo is None else float(lo), max=None if hi is None else float(hi)))
    return rules


def apply_filters(stats: pl.DataFrame, rules: list[Rule]) -> pl.DataFrame:
    """Rows of `stats` (an `id` column plus stat columns) that break a rule: id, reason, detail.

    A row that breaks several rules is reported once, for the first rule in
    recipe order, so counts per reason add up to the number of rows dropped.
    """
    out = []
    remaining = stats
    for rule in rules:
        if remaining.height == 0:
            break
        if rule.stat not in remaining.columns:
            continue
        col = pl.col(rule.stat)
        checks = []  # (broken expression, reason, how to describe the bound)
        if rule.min is not None:
            checks.append((col < rule.min, f"{rule.stat}_below_min", f"below min={_num(rule.min)}"))
        if rule.max is not None:
            checks.append((col > rule.max, f"{rule.stat}_above_max", f"above max={_num(rule.max)}"))
        if rule.allow is not None:
            checks.append((~col.is_in(list(rule.allow)), f"{rule.stat}_not_allowed",
                           f"not in allow={list(rule.allow)}"))
        if rule.equals is not None:
            checks.append((col != rule.equals, f"{rule.stat}_not_{str(rule.equals).lower()}",
                           f"required equals={str(rule.equals).lower()}"))
        for broken, reason, bound in checks:
            hit = remaining.filter(col.is_not_null() & broken)
            if hit.height:
                values = hit[rule.stat].to_list()
                out.append(pl.DataFrame({
                    "id": hit["id"],
                    "reason": [reason] * hit.height,
                    "detail": [f"{rule.stat}={_num(v)} is {bound} (curate.filters.{rule.stat})" for v in values],
                }, schema={"id": pl.String, "reason": pl.String, "detail": pl.String}))
                remaining = remaining.filter(~pl.col("id").is_in(hit["id"].implode()))
    if not out:
        return pl.DataFrame(schema={"id": pl.String, "reason": pl.String, "detail": pl.String})
    return pl.concat(out)


def quality_score(stats: pl.DataFrame) -> np.ndarray:
    """A per-row score for choosing which copy of a duplicate survives: more content, then less lossy.

    Size first (pixels x duration, samples, rows or characters: a larger copy
    carries more), then the media file's bytes (for the same content, a PNG
    beats its JPEG re-encode, a high-quality JPEG a low-quality one; sharpness
    cannot tell, since JPEG block edges raise the Laplacian), then lower
    reconstruction error. Each term only breaks ties of the one before.
    """
    def get(name: str) -> np.ndarray:
        if name not in stats.columns:
            return np.zeros(stats.height)
        return stats[name].cast(pl.Float64).fill_null(0.0).fill_nan(0.0).to_numpy()

    pixels = get("image_width") * get("image_height") + get("video_width") * get("video_height") * np.maximum(
        get("video_duration_s"), 1e-3)
    size = pixels + get("audio_duration_s") * 1e3 + get("sensor_length") + get("text_chars")
    fidelity = np.minimum(np.log1p(np.maximum(get("media_bytes"), 0.0)), 99.0)
    return np.round(np.log1p(size), 3) * 1e6 + fidelity * 1e3 - np.minimum(get("token_recon_mse"), 0.999)


def _num(v) -> str:
    if isinstance(v, float):
        return f"{v:.6g}"
    return str(v)
