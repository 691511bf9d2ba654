"""Report sections about what came in and what curation did: overview, rejects, stats vs thresholds, dedup."""
from __future__ import annotations

import re
import numpy as np
import polars as pl
import pyarrow as pa

from dataengine import modalities
from dataengine.report import media
from dataengine.report.html import (DROPPED, KEPT, MODALITY_COLORS, Raw, Section, cards, esc, figure, img, num,
                                    pct, table)
from dataengine.report.plots import hbar, histogram

ITEM_DROPS = ("filter", "dedup")


def file_modality(paths: pl.Series) -> pl.Series:
    """What each file is, from its extension: image, audio, video, sensor, text, jsonl, sidecar or other."""
    # the last two suffixes ("x.depth.png" -> ".depth.png"): a registered compound suffix wins
    ext = paths.str.replace(r"#.*$", "").str.extract(r"[^/.]((?:\.[^./]+){1,2})$").str.to_lowercase()
    known = {}
    for e in ext.drop_nulls().unique().to_list():  # one lookup per distinct ending, not per row
        kind = modalities.kind_of(modalities.split_name("x" + e)[1])
        known[e] = kind or ("sidecar" if e.endswith(".json") else "other")
    return ext.replace_strict(known, default="other", return_dtype=pl.String)


def ok_candidates(data) -> pl.DataFrame | None:
    """The sample of tokenized items (id, source, kind, stats) behind the stat plots (report/digest.py)."""
    c = data.candidates
    return None if c is None else c.filter(pl.col("status") == "ok")


def sampled(data, n: int) -> str:
    """How many items a plot stands on: all of them, or a uniform sample of them."""
    total = data.digest["candidates"]["ok"]
    return f"{n:,} items" if n >= total else f"a uniform sample of {n:,} of {total:,} items"


def overview(data) -> Section:
    st = data.stats
    seqs = st.get("sequences", {})
    items = data.digest["rejects"]["items_by_stage"]  # one row per item, companions aside
    by_stage = {s: int(items.get(s, 0)) for s in ("discover", "decode", "tokenize", *ITEM_DROPS)}
    split = seqs.get("by_split", {})
    mix = st.get("curate", {}).get("mixture", {}).get("totals", {})
    steps = [
        ("input files", st["inputs"]["files"], "every file found under the sources"),
        ("sample groups", st["inputs"]["sample_groups"],
         "files sharing a stem form one group (media + caption / sidecar)"),
        ("rejected before tokens", by_stage["discover"] + by_stage["decode"] + by_stage["tokenize"],
         "unreadable, corrupt, unsupported or failing files (rejects by stage below)"),
        ("tokenized items", data.digest["candidates"]["ok"],
         "decoded and tokenized candidates (a .jsonl gives one item per record)"),
        ("dropped by filters", by_stage["filter"], "a stat outside a recipe threshold"),
        ("dropped as duplicates", by_stage["dedup"], "exact or near copy of a kept item"),
        ("left out by the mixture plan", mix.get("rows_left_out", 0),
         "written, but beyond a group's token budget: the trainer's loader skips them"),
        ("sequences written", seqs.get("total", 0),
         f"train {split.get('train', 0):,}, val {split.get('val', 0):,}, each once; the plan reads "
         f"{mix.get('copies', 0):,} train copies per epoch"),
    ]
    body = cards([("input files", st["inputs"]["files"]), ("sequences", seqs.get("total", 0)),
                  ("tokens", st.get("tokens", {}).get("total", 0)), ("rejected rows", st["rejects"]["total"]),
                  ("vocabulary ids", data.manifest.get("vocab", {}).get("size", 0)),
                  ("shards", sum(1 for s in data.manifest.get("shards", []) if s.get("format") == "parquet"))])
    body += table(["step", "count", "what it means"], [[a, b, c] for a, b, c in steps], numeric={1})
    body += hbar([a for a, b, _ in steps if b is not None], {"count": [b for _, b, _ in steps if b is not None]},
                 title="From files to sequences", width=640)
    return Section("overview", "Overview",
                   "Every discovered input ends in exactly one place: a written sequence or a row of "
                   "<code>rejects.parquet</code> with a stage and a reason. This is the count at each step.", body)


def inputs_and_rejects(data) -> Section:
    st, keys = data.stats, data.digest["rejects"]["keys"]
    inputs = st["inputs"]
    body = "<h3>Inputs</h3>"
    kinds = inputs.get("by_kind", {})
    body += table(["sample group kind", "groups", "share"],
                  [[k, v, pct(v, inputs["sample_groups"])] for k, v in sorted(kinds.items())], numeric={1, 2})
    body += table(["source", "files", "folder"],
                  [[s, n, str(data.sources.get(s, "?"))] for s, n in sorted(inputs.get("by_source", {}).items())],
                  numeric={1})
    body += "<h3>Rejects by reason and modality</h3>"
    if not keys:
        return Section("inputs", "Inputs and rejects", "What came in, and what did not make it.",
                       body + "<p>No input was rejected.</p>")
    labels = [f"{k['stage']}/{k['reason']}" for k in keys]
    mods = sorted({m for k in keys for m in k["by_modality"]})
    body += hbar(labels, {m: [k["by_modality"].get(m, 0) for k in keys] for m in mods}, stacked=True,
                 colors={**MODALITY_COLORS, "jsonl": "#9ecae9", "sidecar": "#9d755d", "other": "#bab0ac"},
                 title="Rejected files per stage/reason, coloured by what the file is", width=760)
    rows = []
    for k in keys:
        by_mod = ", ".join(f"{m} {n}" for m, n in sorted(k["by_modality"].items()))
        ex = k["example"]
        rows.append([k["stage"], k["reason"], k["files"], by_mod,
                     Raw(f"<code>{esc(ex['path'])}</code>: {esc(ex['detail'][:160])}")])
    body += table(["stage", "reason", "files", "by modality", "example"], rows, numeric={2})
    body += ("<p class=\"note\">A dropped item takes its caption or sidecar with it (reason "
             "<code>media_dropped</code> / <code>media_rejected</code>). Every row is in "
             "<code>rejects.parquet</code> with the full detail.</p>")
    return Section("inputs", "Inputs and rejects",
                   "What came in, by kind and source; then every rejected file, by the stage and reason that "
                   "stopped it and by what kind of file it was.", body)


def _stats_frame(data) -> pl.DataFrame | None:
    from dataengine.curate.apply import stats_frame

    ok = ok_candidates(data)
    if ok is None or ok.height == 0:
        return None
    frame = stats_frame(pa.table({"id": ok["id"].to_arrow(), "stats": ok["stats"].to_arrow()}))
    return frame.with_columns(ok["kind"].alias("_kind"))


def distributions(data) -> Section:
    frame = _stats_frame(data)
    lead = ("Quality stats are measured once per item, before any threshold; the recipe's "
            "<code>curate.filters</code> then decide. Each plot shows the tokenized candidates (a uniform sample "
            "of them past 20,000) "
            "(dropped ones included); red marks the items outside the threshold, dashed lines the thresholds.")
    if frame is None:
        return Section("distributions", "Stats against thresholds", lead,
                       "<p>No item was tokenized.</p>")
    curate = data.stats.get("curate", {})
    rules = curate.get("filters", {}).get("rules", {})
    dropped = curate.get("filters", {}).get("dropped", {})
    figs = []
    for stat, rule in sorted(rules.items()):
        if stat not in frame.columns:
            continue
        col = frame[stat]
        present = col.drop_nulls()
        n_drop = sum(v for k, v in dropped.items() if k.startswith(stat + "_"))
        if {"min", "max"} & set(rule):
            v = col.cast(pl.Float64).to_numpy()
            out = np.zeros(len(v), bool)
            lines = []
            if rule.get("min") is not None:
                out |= v < rule["min"]
                lines.append((float(rule["min"]), f"min {num(float(rule['min']))}"))
            if rule.get("max") is not None:
                out |= v > rule["max"]
                lines.append((float(rule["max"]), f"max {num(float(rule['max']))}"))
            svg = histogram(v, dropped=out, lines=lines, title=stat, xlabel=stat)
        else:
            allowed = {str(a) for a in rule.get("allow", [])} if "allow" in rule else {str(rule.get("equals")).lower()}
            vc = present.cast(pl.String).str.replace_many(["True", "False"], ["true", "false"]).value_counts()
            counts = sorted(zip(vc[vc.columns[0]].to_list(), vc["count"].to_list()), key=lambda kv: (-kv[1], kv[0]))
            top = counts[:12]  # the most frequent values
            svg = hbar([k for k, _ in top], {"allowed": [n if k in allowed else 0 for k, n in top],
                                             "dropped": [n if k not in allowed else 0 for k, n in top]},
                       stacked=True, colors={"allowed": KEPT, "dropped": DROPPED}, title=stat, width=330)
        cond = ", ".join(f"{k} {num(float(v)) if isinstance(v, (int, float)) and not isinstance(v, bool) else v}"
                         for k, v in sorted(rule.items()))
        figs.append(figure(svg, f"<b>{esc(stat)}</b> ({esc(cond)}): measured on {sampled(data, present.len())}; "
                                f"{n_drop:,} dropped for it (of all items)"))
    body = "<h3>Thresholds in the recipe</h3>"
    body += ('<div class="grid">' + "".join(figs) + "</div>") if figs else "<p>The recipe sets no filter.</p>"
    body += ("<h3>Other stats</h3><p class=\"note\">Stats with no threshold, to help choose one "
             "(<code>dataengine/curate/stats.py</code> defines each). Token stats are split by item kind. "
             f"Measured on {sampled(data, frame.height)}.</p>")
    small = []
    shown_elsewhere = {"id", "_kind", "token_recon_mse"}  # reconstruction error: under tokenizer fidelity
    for stat in sorted(c for c in frame.columns if c not in rules and c not in shown_elsewhere):
        col = frame[stat]
        if not col.dtype.is_numeric() or col.drop_nulls().n_unique() < 2:
            continue
        groups = [(k, frame.filter(pl.col("_kind") == k)[stat]) for k in sorted(set(frame["_kind"].to_list()))] \
            if stat.startswith("token_") else [("", col)]
        for kind, values in groups:
            values = values.cast(pl.Float64).drop_nulls()
            if values.len() < 2:
                continue
            title = f"{stat} ({kind})" if kind else stat
            small.append(histogram(values.to_numpy(), title=title, width=250, height=150, bins=24))
    body += '<div class="grid">' + "".join(small) + "</div>"
    return Section("distributions", "Stats against thresholds", lead, body)


_JACC_RE = re.compile(r"Jaccard ([0-9.]+)")


def dedup_clusters(data) -> Section:
    dd = data.stats.get("curate", {}).get("dedup", {})
    lead = ("Exact duplicates share a content hash; near duplicates share most token n-grams (MinHash-LSH, "
            "estimated Jaccard at or above the kind's threshold). Each cluster keeps its best copy "
            "(largest, then sharpest) and drops the others with the kept twin named.")
    if not dd:
        return Section("dedup", "Duplicate clusters", lead, "<p>Dedup did not run.</p>")
    body = cards([("items checked", dd.get("rows", 0)), ("kept", dd.get("kept", 0)),
                  ("exact duplicates", dd.get("dropped", {}).get("exact_duplicate", 0)),
                  ("near duplicates", dd.get("dropped", {}).get("near_duplicate", 0)),
                  ("clusters (2+ members)", dd.get("clusters", 0))])
    thr = dd.get("config", {}).get("threshold", {})
    ngram = dd.get("config", {}).get("ngram", {})
    body += table(["kind", "items", "kept", "exact", "near", "n-gram", "Jaccard threshold"],
                  [[k, v.get("rows", 0), v.get("kept", 0), v.get("exact_duplicate", 0), v.get("near_duplicate", 0),
                    ngram.get(k, "–"), thr.get(k, "–")] for k, v in sorted(dd.get("by_kind", {}).items())],
                  numeric={1, 2, 3, 4, 5, 6})
    clusters = data.digest["rejects"]["clusters"]
    if not clusters:
        return Section("dedup", "Duplicate clusters", lead, body + "<p>No duplicates were found.</p>")
    where = data.digest["candidates"]["where"]
    body += f"<h3>The {len(clusters)} largest clusters</h3>"
    rows = []
    for c in clusters:
        source, path, kind = where.get(c["kept"], ("?", "?", "?"))
        members = [Raw(_member(data, source, path, kind, "kept"))]
        for r in c["members"]:
            jm = _JACC_RE.search(r["detail"])
            label = f"{r['reason'].replace('_', ' ')}" + (f", J≈{jm.group(1)}" if jm else "")
            members.append(Raw(_member(data, r["source"], r["path"], kind, label)))
        more = c["dropped"] - len(c["members"])
        tail = f"<p class=\"note\">and {more:,} more (rejects.parquet)</p>" if more > 0 else ""
        rows.append([kind, c["dropped"] + 1,
                     Raw('<div class="grid">' + "".join(m.html for m in members) + "</div>" + tail)])
    body += table(["kind", "members", "kept copy first, then the dropped ones"], rows, numeric={1})
    return Section("dedup", "Duplicate clusters", lead, body)


def _member(data, source: str, path: str, kind: str, label: str) -> str:
    """One cluster member: a thumbnail (images, video) or the opening words (text), with its path."""
    f = media.source_file(data.sources, source, path)
    shown = ""
    try:
        if f is not None and kind == "image":
            shown = img(media.png_bytes(media.thumbnail(media.decode_original("image", f, {}, sample_rate=16000),
                                                        96)), "image/png", path)
        elif f is not None and kind in ("text", "chat", "interleaved"):
            shown = f'<pre class="text" style="max-width:260px;max-height:90px">{esc(media.read_text(f, 240))}</pre>'
    except Exception as e:  # a moved or damaged original: say so, do not fail the report
        shown = f'<i class="report-error">original unreadable ({esc(type(e).__name__)}: {esc(str(e)[:80])})</i>'
    color = KEPT if label == "kept" else DROPPED
    return (f'<figure>{shown}<figcaption><span class="swatch" style="background:{color}"></span>'
            f"<b>{esc(label)}</b><br><code>{esc(source)}/{esc(path)}</code></figcaption></figure>")
