"""Lineage: a few samples followed from their input files to the shard row that holds them."""
from __future__ import annotations

import hashlib
import json


from dataengine.report import media
from dataengine.report.html import Raw, Section, esc, table

META_KEYS = ("width", "height", "frames", "fps", "duration_s", "sample_rate", "rate_hz", "channels", "label",
             "truncated")
KINDS = ("image", "video", "audio", "sensor", "text", "chat", "interleaved")


def pick_lineage(data) -> list[str]:
    """One sequence per kind, the one with the largest id: not the gallery's items."""
    last = data.digest["sequences"]["last"]
    return [last[k]["id"] for k in KINDS if k in last]


def lineage(data) -> Section:
    lead = ("A few samples followed from file to shard: the input files with the sha256 recorded at decode time "
            "(checked against the file now), what was decoded, the sequence composed from its tokens, what "
            "curation decided, and where the row lives.")
    rows = data.rows(pick_lineage(data))
    body = "".join(_chain(data, r) for r in rows) or "<p>No sequences were written.</p>"
    body += _rejected_examples(data)
    return Section("lineage", "Lineage: from file to shard", lead, body)


def _file_state(data, source: str, path: str, sha: str) -> str:
    f = media.source_file(data.sources, source, path)
    if f is None:
        return "missing now"
    h = hashlib.sha256()
    with open(f, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return "unchanged" if h.hexdigest() == sha else "changed since the run"


def _chain(data, row: dict) -> str:
    meta = json.loads(row["meta"])
    files = "".join(
        f"<br><code>{esc(row['source'])}/{esc(lin['path'])}</code> ({esc(lin['role'])}, sha256 "
        f"<code>{esc(lin['sha256'][:16])}</code>…, {_file_state(data, row['source'], lin['path'], lin['sha256'])})"
        for lin in row["lineage"] or [])
    root = data.sources.get(row["source"])
    decoded = ", ".join(f"{k} {_short(meta[k])}" for k in META_KEYS if meta.get(k) is not None)
    spans = ", ".join(f"{s['modality']} [{s['start']}, {s['end']})" for s in row["spans"] or [])
    loss = sum(t["end"] - t["start"] for t in row["target_spans"] or [])
    twins = data.digest["rejects"]["twins"].get(row["id"], 0)
    copies = _plan_copies(data.manifest.get("mixture"), row)
    stats = {k: v for k, v in (row.get("stats") or {}).items() if v is not None}
    rules = data.stats.get("curate", {}).get("filters", {}).get("rules", {})
    checked = [k for k in rules if k in stats]
    shard = row["shard"]
    entry = next((s for s in data.manifest.get("shards", []) if s["path"] == shard), {})
    wds = shard.replace("parquet/", "wds/", 1).rsplit(".", 1)[0] + ".tar"
    has_wds = any(s["path"] == wds for s in data.manifest.get("shards", []))
    steps = [
        ("files", f"source <b>{esc(row['source'])}</b> in <code>{esc(root)}</code>{files}"),
        ("decoded", f"{esc(row['kind'])} item <code>{esc(row['id'])}</code>, content hash "
                    f"<code>{esc((row.get('content_hash') or '')[:16])}</code>…"
         + (f"; {esc(decoded)}" if decoded else "")
         + f"; {len(stats)} quality stats measured"),
        ("tokenized", f"task <code>{esc(row['task'])}</code>: {row['num_tokens']:,} tokens; spans {esc(spans)}; "
                      f"loss on {loss:,} tokens"),
        ("curated", f"passed {len(checked)} threshold(s) ({esc(', '.join(checked) or 'none apply')}); "
                    + (f"kept copy of a cluster with {twins} dropped twin(s)" if twins else "no duplicate found")
                    + f"; split <b>{esc(row['split'])}</b>"
                    + (f"; the mixture plan reads it {copies} time{'s' * (copies != 1)} per epoch"
                       if copies is not None else "")),
        ("shard", f"<code>{esc(shard)}</code> row {row['row']:,} (sha256 <code>{esc(entry.get('sha256', '')[:16])}"
                  "</code>…)" + (f"; <code>{esc(wds)}</code> key <code>{esc(row['id'])}</code>" if has_wds else "")),
    ]
    items = "".join(f"<li><b class=\"step\">{esc(k)}</b> {v}</li>" for k, v in steps)
    return f'<div class="lineage"><h3>{esc(row["kind"])}: {esc(row["id"])}</h3><ol class="chain">{items}</ol></div>'


def _short(v) -> str:
    if isinstance(v, bool):
        return str(v).lower()
    if isinstance(v, float):
        return f"{v:.4g}"
    if isinstance(v, list):
        return "[" + ", ".join(map(str, v[:6])) + (", …]" if len(v) > 6 else "]")
    return str(v)[:60]


def _rejected_examples(data) -> str:
    examples = data.digest["rejects"]["examples"]
    rows = [[stage, Raw(f"<code>{esc(r['source'])}/{esc(r['path'])}</code>"), r["reason"], r["detail"][:200]]
            for stage in ("discover", "decode", "tokenize", "filter", "dedup", "mixture")
            if (r := examples.get(stage))]
    if not rows:
        return ""
    return ("<h3>And files that did not arrive (one per stage)</h3>"
            + table(["stage", "file", "reason", "detail"], rows))


def _plan_copies(plan: dict | None, row: dict) -> int | None:
    """How often the manifest's mixture plan has the trainer read `row` per epoch (None: not in the plan)."""
    if not plan or row.get("split") != plan.get("split"):
        return None
    from dataengine.curate.mixture import copies_from_plan, rank_bins

    group = f"{row['source']}/{row['kind']}"
    groups = plan.get("groups") or {}
    if group not in groups:
        return None
    names = sorted(groups)
    flat = {"names": names, "full": [groups[g]["full"] for g in names], "cut": [groups[g]["cut"] for g in names]}
    return int(copies_from_plan([group], rank_bins([row["id"]], plan["seed"]), flat)[0])
