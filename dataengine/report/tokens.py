"""Report sections about tokens: per source x modality before/after curation, the mixture, sequence lengths."""
from __future__ import annotations

import numpy as np

from dataengine.report.html import ACHIEVED, KEPT, MODALITY_COLORS, TARGET, Section, figure, num, table
from dataengine.report.plots import hbar, histogram


def tokens_and_mixture(data) -> Section:
    body = _mixture(data.stats.get("curate", {}).get("mixture", {}))
    body += _source_modality(data)
    return Section("tokens", "Tokens per source and modality, before and after balancing",
                   "The mixture step sets a token budget per source/kind group of the train split and meets it "
                   "with a plan in manifest.json that the trainer's loader follows: every item is written once, "
                   "and a group's items are read a whole number of times plus once more for a stable, hash-ordered "
                   "share of them (down-sampling leaves the rest out). <i>Available</i> is what curation left "
                   "before balancing, <i>target</i> what the policy asked for, <i>achieved</i> what the plan "
                   "reads per epoch.", body)


def _mixture(report: dict) -> str:
    groups = report.get("groups") or {}
    if not groups:
        return "<p>No mixture report (nothing reached the train split).</p>"
    tot = report.get("totals", {})
    names = sorted(groups)
    policy = report.get("policy", "?")
    extra = []
    if tot.get("temperature") is not None:
        extra.append(f"temperature {num(float(tot['temperature']))}")
    if tot.get("max_epochs") is not None:
        extra.append(f"at most {num(float(tot['max_epochs']))} epochs per group")
    if tot.get("budget_tokens"):
        extra.append(f"budget {num(tot['budget_tokens'])} tokens")
    body = (f"<h3>Mixture of the train split</h3><p>Policy <b>{policy}</b>" +
            (f" ({', '.join(extra)})" if extra else "") + ".</p>")
    g = [groups[n] for n in names]
    avail_total = max(sum(x["available_tokens"] for x in g), 1)
    body += table(
        ["group (source/kind)", "available", "target", "achieved", "available %", "target %", "achieved %", "epochs"],
        [[n, x["available_tokens"], x["target_tokens"], x["achieved_tokens"],
          f"{100 * x.get('available_share', x['available_tokens'] / avail_total):.1f}",
          f"{100 * x['target_share']:.1f}", f"{100 * x['achieved_share']:.1f}", f"{x['epochs']:.2f}"]
         for n, x in zip(names, g)]
        + [["total", tot.get("available_tokens", 0), tot.get("target_tokens", 0), tot.get("achieved_tokens", 0),
            "100.0", "100.0", "100.0", ""]], numeric={1, 2, 3, 4, 5, 6, 7})
    colors = {"available (before)": "#9ecae9", "target": TARGET, "achieved (after)": ACHIEVED}
    body += '<div class="grid">'
    body += figure(hbar(names, {"available (before)": [x["available_tokens"] for x in g],
                                "target": [x["target_tokens"] for x in g],
                                "achieved (after)": [x["achieved_tokens"] for x in g]},
                        colors=colors, title="Train tokens per group", width=560))
    body += figure(hbar(names, {"available (before)": [100 * x.get("available_share", x["available_tokens"] /
                                                                   avail_total) for x in g],
                                "target": [100 * x["target_share"] for x in g],
                                "achieved (after)": [100 * x["achieved_share"] for x in g]},
                        colors=colors, title="Share of train tokens, %", width=560, fmt=lambda v: f"{v:.1f}"))
    return body + "</div>"


def _source_modality(data) -> str:
    after = data.stats.get("tokens", {}).get("by_source_modality", {})
    before = data.digest["candidates"]["tokens_by_source_modality"]  # summed by the digest's part tasks
    keys = sorted({(s, m) for d in (before, after) for s, mods in d.items() for m in mods})
    if not keys:
        return "<p>No tokens were written.</p>"
    body = ("<h3>Tokens per source x modality</h3><p class=\"note\">Before: every tokenized candidate "
            "(<code>cache/candidates/</code>), ahead of filters, dedup and the mixture. After: the written "
            "shards, train and val, each row once. <i>special</i> counts markers and separators.</p>")
    rows = []
    for s, m in keys:
        b, a = before.get(s, {}).get(m, 0), after.get(s, {}).get(m, 0)
        rows.append([s, m, b, a, f"{a / b:.2f}x" if b else "–"])
    body += table(["source", "modality", "before curation", "written", "ratio"], rows, numeric={2, 3, 4})
    labels = [f"{s} · {m}" for s, m in keys]
    body += hbar(labels, {"before curation": [before.get(s, {}).get(m, 0) for s, m in keys],
                          "written": [after.get(s, {}).get(m, 0) for s, m in keys]},
                 colors={"before curation": "#9ecae9", "written": KEPT}, title="Tokens per source · modality",
                 width=700)
    return body


def lengths(data) -> Section:
    from dataengine.report.digest import length_counts

    lead = ("Tokens per written sequence (markers included), by item kind; dashed lines mark the median and "
            "the 95th percentile. Long tails decide the context length and packing.")
    keys = data.digest["sequences"]["lengths"]
    if not keys:
        return Section("lengths", "Sequence lengths", lead, "<p>No sequences were written.</p>")
    figs = [_length_hist(*length_counts(data.digest, "all"), "all sequences")]
    for key in sorted(k for k in keys if k.startswith("kind:")):
        kind = key.split(":", 1)[1]
        figs.append(_length_hist(*length_counts(data.digest, key), f"kind {kind}", MODALITY_COLORS.get(kind)))
    body = '<div class="grid">' + "".join(figs) + "</div>"
    rows = []
    for key in sorted(k for k in keys if k.startswith("task:")):
        v, c = length_counts(data.digest, key)
        n, total = int(c.sum()), int((v * c).sum())
        rows.append([key.split(":", 1)[1], n, total, float(round(total / n, 1)), _quantile(v, c, 50),
                     _quantile(v, c, 95), int(v.max())])
    body += table(["task", "sequences", "tokens", "mean", "median", "p95", "max"], rows, numeric={1, 2, 3, 4, 5, 6})
    return Section("lengths", "Sequence lengths", lead, body)


def _quantile(values: np.ndarray, counts: np.ndarray, q: float) -> int:
    """`np.percentile(np.repeat(values, counts), q, method="nearest")` without repeating (values ascending)."""
    n = int(counts.sum())
    k = int(np.around(q / 100 * (n - 1)))
    return int(values[np.searchsorted(np.cumsum(counts), k, side="right")])


def _length_hist(v: np.ndarray, c: np.ndarray, title: str, color: str | None = None) -> str:
    p50, p95 = float(_quantile(v, c, 50)), float(_quantile(v, c, 95))
    svg = histogram(v.astype(np.float64), weights=c, title=f"{title} ({int(c.sum()):,})", bins=30, width=300,
                    height=170, xlabel="tokens per sequence",
                    markers=[(p50, f"p50 {p50:,.0f}"), (p95, f"p95 {p95:,.0f}")])
    if color:
        svg = svg.replace(f'fill="{KEPT}"', f'fill="{color}"')
    return svg
