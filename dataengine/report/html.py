"""HTML building blocks for the report: escaping, numbers, tables, embedded media, the page.

Everything the page shows is inside the one file: styles inline, plots as
inline SVG, media as `data:` URIs. The Content-Security-Policy forbids the page
from loading anything else, so a stray URL could not leak a request either.
"""
from __future__ import annotations

import base64
import html
import math
from dataclasses import dataclass

# No scripts, no fetches: only inline styles and data: media.
CSP = "default-src 'none'; img-src data:; media-src data:; style-src 'unsafe-inline'"

MODALITY_COLORS = {"text": "#4c78a8", "image": "#f58518", "video": "#e45756", "audio": "#72b7b2",
                   "sensor": "#54a24b", "special": "#9d755d", "chat": "#b279a2", "unknown": "#bab0ac"}
KEPT, DROPPED, TARGET, ACHIEVED = "#4c78a8", "#e45756", "#f58518", "#54a24b"

STYLE = """
body{font:15px/1.45 system-ui,-apple-system,"Segoe UI",Roboto,Helvetica,Arial,sans-serif;color:#1d2330;
 margin:0;background:#f6f7f9}
main{max-width:1180px;margin:0 auto;padding:24px 28px 60px;background:#fff}
h1{font-size:26px;margin:8px 0 4px}h2{font-size:21px;margin:34px 0 6px;padding-top:10px;border-top:2px solid #e3e6ea}
h3{font-size:16px;margin:20px 0 6px}
p.lead{color:#4a5160;margin:4px 0 14px}p.note{color:#5b6270;font-size:13px;margin:4px 0}
nav.toc{background:#f0f3f7;border-radius:8px;padding:10px 16px;margin:14px 0}
nav.toc ol{margin:4px 0;padding-left:22px;columns:2}nav.toc a{color:#2a5db0;text-decoration:none}
table{border-collapse:collapse;margin:8px 0 14px;font-size:13.5px}
th,td{padding:4px 10px;border-bottom:1px solid #e6e8ec;text-align:left;vertical-align:top}
th{background:#f3f5f8;font-weight:600}td.n,th.n{text-align:right;font-variant-numeric:tabular-nums}
code,.mono{font-family:ui-monospace,SFMono-Regular,Menlo,Consolas,monospace;font-size:12.5px}
.cards{display:flex;flex-wrap:wrap;gap:10px;margin:10px 0}
.card{background:#f3f6fa;border-radius:8px;padding:8px 14px;min-width:120px}
.card b{display:block;font-size:21px}.card span{color:#5b6270;font-size:12.5px}
.grid{display:flex;flex-wrap:wrap;gap:10px}.grid>figure{margin:0}
figure{margin:8px 0}figcaption{font-size:12.5px;color:#4a5160;max-width:560px}
svg{background:#fff}svg text{font-family:system-ui,Helvetica,Arial,sans-serif}
.pair{display:flex;gap:18px;align-items:flex-start;flex-wrap:wrap;padding:10px 0;border-bottom:1px solid #eceef1}
.pair figure{margin:0}.pair img{image-rendering:pixelated;border:1px solid #d6d9de}
.pair .meta{font-size:12.5px;color:#3d4452;max-width:330px}
pre.text{white-space:pre-wrap;max-width:500px;max-height:220px;overflow:auto;background:#f7f7f9;
 border:1px solid #e3e6ea;padding:6px 8px;font-size:12px;margin:0}
ol.chain{list-style:none;padding-left:0;margin:6px 0}ol.chain li{border-left:3px solid #4c78a8;
 padding:3px 10px;margin:0 0 3px 8px}ol.chain li b.step{display:inline-block;min-width:84px}
.lineage{border:1px solid #e3e6ea;border-radius:8px;padding:8px 14px;margin:10px 0}
.report-error{color:#b0303a}
.swatch{display:inline-block;width:10px;height:10px;margin-right:4px;border-radius:2px}
"""


def esc(s) -> str:
    return html.escape(str(s), quote=True)


def num(v, digits: int = 3) -> str:
    """Integers with thousands separators; floats with `digits` significant digits; None as an en dash."""
    if v is None or (isinstance(v, float) and not math.isfinite(v)):
        return "–"
    if isinstance(v, bool):
        return str(v).lower()
    if isinstance(v, int) or (isinstance(v, float) and v.is_integer() and abs(v) < 1e15):
        return f"{int(v):,}"
    if isinstance(v, float):
        return f"{v:,.0f}" if abs(v) >= 10 ** digits else f"{v:.{digits}g}"
    return esc(v)


def pct(part: float, whole: float) -> str:
    return "–" if not whole else f"{100.0 * part / whole:.1f}%"


def table(headers: list[str], rows: list[list], numeric: set[int] | None = None, cls: str = "") -> str:
    """A table; cells are escaped unless they are `Raw`; columns in `numeric` are right-aligned."""
    numeric = numeric or set()
    head = "".join(f'<th class="n">{esc(h)}</th>' if i in numeric else f"<th>{esc(h)}</th>"
                   for i, h in enumerate(headers))
    body = []
    for r in rows:
        cells = []
        for i, c in enumerate(r):
            text = c.html if isinstance(c, Raw) else (num(c) if isinstance(c, (int, float)) else esc(c))
            cells.append(f'<td class="n">{text}</td>' if i in numeric else f"<td>{text}</td>")
        body.append("<tr>" + "".join(cells) + "</tr>")
    attr = f' class="{cls}"' if cls else ""
    return f"<table{attr}><thead><tr>{head}</tr></thead><tbody>{''.join(body)}</tbody></table>"


@dataclass(frozen=True)
class Raw:
    """Markup that a table cell takes as is."""
    html: str


def data_uri(mime: str, payload: bytes) -> str:
    return f"data:{mime};base64,{base64.b64encode(payload).decode('ascii')}"


def img(payload: bytes, mime: str, alt: str, width: int | None = None, height: int | None = None) -> str:
    size = (f' width="{width}"' if width else "") + (f' height="{height}"' if height else "")
    return f'<img src="{data_uri(mime, payload)}" alt="{esc(alt)}"{size}>'


def audio(payload: bytes, label: str) -> str:
    src = data_uri("audio/wav", payload)
    return f'<audio controls preload="metadata" src="{src}" aria-label="{esc(label)}"></audio>'


def figure(body: str, caption: str = "") -> str:
    cap = f"<figcaption>{caption}</figcaption>" if caption else ""
    return f"<figure>{body}{cap}</figure>"


def cards(items: list[tuple[str, object]]) -> str:
    return '<div class="cards">' + "".join(
        f'<div class="card"><b>{num(v) if isinstance(v, (int, float)) else esc(v)}</b><span>{esc(k)}</span></div>'
        for k, v in items) + "</div>"


@dataclass
class Section:
    id: str
    title: str
    lead: str       # one or two sentences: what this section shows and how to read it
    body: str


def page(title: str, subtitle: str, sections: list[Section]) -> str:
    toc = "".join(f'<li><a href="#{s.id}">{esc(s.title)}</a></li>' for s in sections)
    parts = [
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8">',
        f'<meta http-equiv="Content-Security-Policy" content="{CSP}">',
        '<meta name="viewport" content="width=device-width, initial-scale=1">',
        f"<title>{esc(title)}</title><style>{STYLE}</style></head><body><main>",
        f"<h1>{esc(title)}</h1><p class=\"lead\">{subtitle}</p>",
        f'<nav class="toc" id="contents"><b>Contents</b><ol>{toc}</ol></nav>',
    ]
    for s in sections:
        parts.append(f'<section id="{s.id}"><h2>{esc(s.title)}</h2><p class="lead">{s.lead}</p>{s.body}</section>')
    parts.append("</main></body></html>\n")
    return "\n".join(parts)
