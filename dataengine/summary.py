"""The one-screen summary `dataengine run` prints at the end, read back from what the run wrote.

Sources: OUT/stats.json and OUT/manifest.json (via `inspect.load_output`), and
OUT/report_digest.json for the tokenized items per kind (skipped when it is
not there). At most about 30 lines, none wider than `width` (100) columns
except a single path longer than that. The mixture table is `inspect`'s
(`mixture_lines`), cut to the largest groups. Example (tiny mixed corpus):

    run finished in 27.0s: 30 sequences, 3,905 tokens, 22 rejected rows
    inputs     48 files from 1 source -> 32 sample groups: audio 6, image 10, jsonl 1, sensor 5, ...
    items      21 decoded and tokenized: audio 4, chat 2, image 5, sensor 3, text 4, video 3
    rejected   decode 15: empty_file 3, corrupt 2, not_an_image 2, truncated 2 (+6 more)
    filters    1 dropped: image_width_below_min 1
    dedup      1 dropped (1 exact, 0 near) in 1 cluster; largest 2 image items
    mixture    temperature plan: 3,470 train tokens -> 3,466 per epoch (target 3,470); 2 items left out, 31 reads of 27 items
        group           available      target    achieved  target %  achieved %  epochs
        corpus/sensor        1418        1029         709     29.64       22.86    0.50
        ... (the 6 largest source/kind groups)
    sequences  train 27 (3,102 tokens), val 3 (803 tokens)
    shards     2 parquet (0.05 MB), 2 webdataset (0.14 MB)
    outputs    shards    out/demo/parquet  and  out/demo/wds
               ...
               report    out/demo/report.html
"""
from __future__ import annotations

import json
import textwrap
from pathlib import Path

from dataengine.inspect import load_output, mixture_lines

WIDTH = 100
LABEL = 11  # column where values start
TOP_GROUPS = 6  # mixture groups shown (the largest)
TOP_REASONS = 4  # reject reasons shown per stage
GROUP_CHARS = 26  # mixture group names are cut to this, so the table fits WIDTH
CURATION_STAGES = ("filter", "dedup")


def format_summary(out: Path, *, seconds: float | None = None, timings: dict[str, float] | None = None,
                   width: int = WIDTH) -> str:
    """The summary of the finished run in `out`; `seconds` (wall time) and `timings` (phase -> s) if known."""
    out = Path(out)
    manifest, stats = load_output(out)
    rows: list[str] = []

    def row(label: str, text: str) -> None:
        rows.extend(textwrap.wrap(text, width, initial_indent=f"{label:<{LABEL - 1}} ",
                                  subsequent_indent=" " * LABEL, break_long_words=False,
                                  break_on_hyphens=False) or [label])

    seqs, toks, rej = stats["sequences"], stats["tokens"], stats["rejects"]
    took = f" in {seconds:.1f}s" if seconds is not None else ""
    rows.append(f"run finished{took}: {seqs['total']:,} sequences, {toks['total']:,} tokens, "
                f"{rej['total']:,} rejected rows")
    inputs = stats["inputs"]
    n_src = len(inputs.get("by_source", {}))
    row("inputs", f"{inputs['files']:,} files from {n_src} source{'s' * (n_src != 1)} -> "
                  f"{inputs['sample_groups']:,} sample groups: {_counts(inputs.get('by_kind', {}))}")
    items = ok_items_by_kind(out)
    if items is not None:
        row("items", f"{sum(items.values()):,} decoded and tokenized: {_counts(items)}")
    _rejected(rej.get("by_stage_reason", {}), row)
    curate = stats.get("curate", {})
    _filters(curate.get("filters", {}), row)
    _dedup(curate.get("dedup", {}), row)
    rows.extend(_mixture(curate.get("mixture", {}), row))
    row("sequences", _splits(manifest) or "none written")
    row("shards", _shards(manifest))
    if timings:
        row("time", ", ".join(f"{k} {v:.1f}s" for k, v in timings.items()))
    report = out / "report.html"
    paths = [("shards", f"{out / 'parquet'}  and  {out / 'wds'}"), ("manifest", out / "manifest.json"),
             ("rejects", out / "rejects.parquet"), ("stats", out / "stats.json"), ("vocab", out / "vocab.json"),
             ("report", report if report.is_file() else f"not built; `dataengine report {out}` writes it")]
    for i, (name, path) in enumerate(paths):
        row("outputs" if i == 0 else "", f"{name:<9} {path}")
    return "\n".join(rows)


def ok_items_by_kind(out: Path) -> dict[str, int] | None:
    """Decoded and tokenized items (before curation) per kind, from OUT/report_digest.json; None without it."""
    from dataengine.report.digest import DIGEST_NAME

    try:
        digest = json.loads((Path(out) / DIGEST_NAME).read_text())
    except (OSError, ValueError):
        return None
    return dict(sorted(digest["candidates"]["ok_by_kind"].items()))


def _counts(counts: dict[str, int]) -> str:
    return ", ".join(f"{k} {v:,}" for k, v in counts.items()) or "none"


def _top(counts: dict[str, int], n: int) -> str:
    ranked = sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))
    more = f" (+{len(ranked) - n} more)" if len(ranked) > n else ""
    return ", ".join(f"{k} {v:,}" for k, v in ranked[:n]) + more


def _rejected(by_stage_reason: dict[str, int], row) -> None:
    """Rows rejected before curation (discover, decode, tokenize), per stage with the top reasons."""
    stages: dict[str, dict[str, int]] = {}
    for key, n in by_stage_reason.items():
        stage, _, reason = key.partition("/")
        if stage not in CURATION_STAGES:
            stages.setdefault(stage, {})[reason] = n
    if not stages:
        row("rejected", "none before curation")
    order = ("discover", "decode", "tokenize")
    for i, stage in enumerate(sorted(stages, key=lambda s: (order.index(s) if s in order else 9, s))):
        reasons = stages[stage]
        row("rejected" if i == 0 else "", f"{stage} {sum(reasons.values()):,}: {_top(reasons, TOP_REASONS)}")


def _filters(report: dict, row) -> None:
    dropped = report.get("dropped") or {}
    if dropped:
        row("filters", f"{sum(dropped.values()):,} dropped: {_top(dropped, TOP_REASONS)}")
    else:
        row("filters", f"none dropped ({len(report.get('rules') or {})} rules)")


def _dedup(report: dict, row) -> None:
    if not report:
        row("dedup", "off")
        return
    dropped = report.get("dropped") or {}
    exact, near = dropped.get("exact_duplicate", 0), dropped.get("near_duplicate", 0)
    clusters = report.get("clusters", 0)
    text = f"{exact + near:,} dropped ({exact:,} exact, {near:,} near) in {clusters:,} cluster{'s' * (clusters != 1)}"
    largest = report.get("largest_clusters") or []
    if largest:
        text += f"; largest {largest[0]['size']:,} {largest[0]['kind']} items"
    row("dedup", text)


def _mixture(report: dict, row) -> list[str]:
    """The mixture plan's totals on one line, then inspect's table for the largest groups."""
    groups = report.get("groups") or {}
    if not groups:
        row("mixture", f"{report.get('policy', 'none')}: every item read once")
        return []
    t = report.get("totals", {})
    row("mixture", f"{report.get('policy', '?')} plan: {t.get('available_tokens', 0):,} train tokens -> "
                   f"{t.get('achieved_tokens', 0):,} per epoch (target {round(t.get('target_tokens') or 0):,}); "
                   f"{t.get('rows_left_out', 0):,} items left out, {t.get('copies', 0):,} reads of "
                   f"{t.get('rows', 0):,} items")
    big = sorted(groups, key=lambda g: (-max(groups[g]["available_tokens"], groups[g]["achieved_tokens"]), g))
    shown = {_cut(g): groups[g] for g in big[:TOP_GROUPS]}
    if len(shown) < min(TOP_GROUPS, len(groups)):  # two names cut to the same text: show them whole
        shown = {g: groups[g] for g in big[:TOP_GROUPS]}
    lines = mixture_lines({**report, "groups": shown})[1:]  # [0] is inspect's title; ours is the line above
    if len(groups) > TOP_GROUPS:
        lines.append(f"    ... {len(groups) - TOP_GROUPS} smaller groups in stats.json (curate.mixture.groups)")
    return lines


def _cut(name: str) -> str:
    """`name` cut in the middle to GROUP_CHARS: the source's start and the kind at the end stay readable."""
    if len(name) <= GROUP_CHARS:
        return name
    head = GROUP_CHARS // 2 - 1
    return name[:head] + "~" + name[-(GROUP_CHARS - head - 1):]


def _splits(manifest: dict) -> str:
    per: dict[str, list[int]] = {}
    for s in manifest.get("shards", []):
        if s["format"] == "parquet":
            acc = per.setdefault(s["split"], [0, 0])
            acc[0] += s["sequences"]
            acc[1] += s["tokens"]
    return ", ".join(f"{split} {n:,} ({t:,} tokens)" for split, (n, t) in sorted(per.items()))


def _shards(manifest: dict) -> str:
    per: dict[str, list[int]] = {}
    for s in manifest.get("shards", []):
        acc = per.setdefault(s["format"], [0, 0])
        acc[0] += 1
        acc[1] += s["bytes"]
    return ", ".join(f"{n:,} {fmt} ({b / 1e6:.2f} MB)" for fmt, (n, b) in sorted(per.items())) or "none"
