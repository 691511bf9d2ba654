"""Small charts as inline SVG: bars, histograms with thresholds, line traces.

Written by hand rather than with a plotting library: the markup is a few KB
per chart, crisp at any zoom, needs no extra dependency, and is byte-for-byte
the same for the same numbers (coordinates are rounded to 0.1 px).
"""
from __future__ import annotations

import math

import numpy as np

from dataengine.report.html import DROPPED, KEPT, esc

GRID, AXIS, INK, MUTED = "#e8eaee", "#9aa1ad", "#1d2330", "#5b6270"
PALETTE = ("#4c78a8", "#f58518", "#54a24b", "#e45756", "#72b7b2", "#b279a2", "#ff9da6", "#9d755d", "#bab0ac",
           "#eeca3b")


def f1(x: float) -> str:
    return f"{x:.1f}"


def short(v: float) -> str:
    """A compact tick label: 1.2k, 3.4M, 0.05."""
    a = abs(v)
    if a >= 1e9:
        return f"{v / 1e9:.3g}G"
    if a >= 1e6:
        return f"{v / 1e6:.3g}M"
    if a >= 1e4:
        return f"{v / 1e3:.3g}k"
    if a == 0 or a >= 1:
        return f"{v:.4g}"
    return f"{v:.2g}"


def nice_ticks(lo: float, hi: float, n: int = 4) -> list[float]:
    if not (math.isfinite(lo) and math.isfinite(hi)) or hi <= lo:
        return [lo]
    raw = (hi - lo) / max(n, 1)
    mag = 10 ** math.floor(math.log10(raw))
    step = next(m * mag for m in (1, 2, 2.5, 5, 10) if m * mag >= raw)
    first = math.ceil(lo / step - 1e-9) * step
    ticks, t = [], first
    while t <= hi + 1e-9 * step:
        ticks.append(round(t, 12))
        t += step
    return ticks


def _svg(width: int, height: int, title: str, body: list[str]) -> str:
    return (f'<svg width="{width}" height="{height}" '
            f'viewBox="0 0 {width} {height}" role="img"><title>{esc(title)}</title>'
            f'<text x="4" y="14" font-size="12.5" font-weight="600" fill="{INK}">{esc(title)}</text>'
            + "".join(body) + "</svg>")


def _legend(names: list[str], colors: list[str], x: float, y: float, right: float | None = None) -> list[str]:
    """Colour keys in a row from `x`; with `right`, the row ends there instead."""
    if right is not None:
        x = right - sum(24 + 6.5 * len(n) for n in names) + 6
    out = []
    for name, color in zip(names, colors):
        out.append(f'<rect x="{f1(x)}" y="{f1(y - 9)}" width="10" height="10" fill="{color}"/>'
                   f'<text x="{f1(x + 14)}" y="{f1(y)}" font-size="11" fill="{MUTED}">{esc(name)}</text>')
        x += 24 + 6.5 * len(name)
    return out


def hbar(labels: list[str], series: dict[str, list[float]], *, title: str, colors: dict[str, str] | None = None,
         stacked: bool = False, width: int = 640, value_label: bool = True, fmt=None) -> str:
    """Horizontal bars, one row per label; several series side by side, or stacked; `fmt` formats values."""
    fmt = fmt or short
    names = list(series)
    colors = colors or {}
    cols = [colors.get(n, PALETTE[i % len(PALETTE)]) for i, n in enumerate(names)]
    vals = np.array([[float(series[n][i] or 0) for n in names] for i in range(len(labels))],
                    np.float64).reshape(len(labels), len(names))
    per_row = 1 if stacked else max(len(names), 1)
    bar_h = 14 if per_row == 1 else 9
    row_h = bar_h * per_row + 8
    left = min(300, 14 + 6.6 * max((len(s) for s in labels), default=4))
    right, top = 64, 34
    height = int(top + row_h * len(labels) + 26)
    vmax = float(vals.sum(axis=1).max() if stacked else vals.max()) if vals.size else 0.0
    vmax = vmax if vmax > 0 else 1.0
    plot_w = width - left - right
    ticks = nice_ticks(0.0, vmax, 4)
    scale = plot_w / max(vmax, ticks[-1])
    body = _legend(names, cols, left, 28) if len(names) > 1 else []
    for t in ticks:
        x = left + t * scale
        body.append(f'<line x1="{f1(x)}" y1="{top - 4}" x2="{f1(x)}" y2="{height - 22}" stroke="{GRID}"/>'
                    f'<text x="{f1(x)}" y="{height - 8}" font-size="10.5" fill="{MUTED}" text-anchor="middle">'
                    f'{short(t)}</text>')
    for i, label in enumerate(labels):
        y0 = top + i * row_h
        body.append(f'<text x="{f1(left - 6)}" y="{f1(y0 + row_h / 2 + 1)}" font-size="11.5" fill="{INK}" '
                    f'text-anchor="end">{esc(label)}</text>')
        x = float(left)
        for j, color in enumerate(cols):
            v = vals[i, j]
            w = v * scale
            y = y0 + 4 + (0 if stacked else j * bar_h)
            bx = x if stacked else left
            if w > 0:
                body.append(f'<rect x="{f1(bx)}" y="{f1(y)}" width="{f1(max(w, 0.8))}" height="{bar_h - 1}" '
                            f'fill="{color}"><title>{esc(label)} · {esc(names[j])}: {fmt(v)}</title></rect>')
            if value_label and not stacked:
                body.append(f'<text x="{f1(bx + w + 3)}" y="{f1(y + bar_h - 2)}" font-size="10" fill="{MUTED}">'
                            f'{fmt(v)}</text>')
            if stacked:
                x += w
        if value_label and stacked:
            body.append(f'<text x="{f1(x + 3)}" y="{f1(y0 + 4 + bar_h - 2)}" font-size="10" fill="{MUTED}">'
                        f'{fmt(float(vals[i].sum()))}</text>')
    return _svg(width, height, title, body)


def histogram(values: np.ndarray, *, title: str, dropped: np.ndarray | None = None,
              lines: list[tuple[float, str]] = (), bins: int = 30, width: int = 330, height: int = 190,
              xlabel: str = "", markers: list[tuple[float, str]] = (), weights: np.ndarray | None = None) -> str:
    """Counts of `values` (NaN ignored; each counted `weights` times when given: a histogram of counts);
    `dropped` rows drawn in red on top; `lines` are thresholds.

    Heavy-tailed positive values (max / min > 1000) get logarithmic bins.
    """
    v = np.asarray(values, dtype=np.float64)
    ok = np.isfinite(v)
    d = np.zeros(len(v), bool) if dropped is None else np.asarray(dropped, bool)
    w = np.ones(len(v), np.int64) if weights is None else np.asarray(weights, np.int64)
    v, d, w = v[ok], d[ok], w[ok]
    left, right, top, bottom = 38, 10, 22, 34
    pw, ph = width - left - right, height - top - bottom
    body: list[str] = []
    if v.size == 0:
        body.append(f'<text x="{width / 2}" y="{height / 2}" font-size="11" fill="{MUTED}" text-anchor="middle">'
                    "no values</text>")
        return _svg(width, height, title, body)
    lo, hi = float(v.min()), float(v.max())
    for x, _ in lines:  # keep thresholds in view
        lo, hi = min(lo, x), max(hi, x)
    log = lo > 0 and hi / lo > 1000
    tx = (lambda a: np.log10(a)) if log else (lambda a: np.asarray(a, np.float64))
    a, b = float(tx(lo)), float(tx(hi))
    if b - a < 1e-12:
        a, b = a - 0.5, b + 0.5
    pad = (b - a) * 0.02
    a, b = a - pad, b + pad
    edges = np.linspace(a, b, bins + 1)
    tv = tx(v)
    kept_c, _ = np.histogram(tv[~d], edges, weights=w[~d])
    drop_c, _ = np.histogram(tv[d], edges, weights=w[d])
    cmax = max(int((kept_c + drop_c).max()), 1)
    sx = lambda t: left + (t - a) / (b - a) * pw  # noqa: E731
    sy = lambda c: top + ph - c / cmax * ph  # noqa: E731
    for t in nice_ticks(0, cmax, 3):
        body.append(f'<line x1="{left}" y1="{f1(sy(t))}" x2="{left + pw}" y2="{f1(sy(t))}" stroke="{GRID}"/>'
                    f'<text x="{left - 4}" y="{f1(sy(t) + 3.5)}" font-size="10" fill="{MUTED}" '
                    f'text-anchor="end">{short(t)}</text>')
    bw = pw / bins
    for i in range(bins):
        x = sx(edges[i])
        k, dr = int(kept_c[i]), int(drop_c[i])
        if k:
            body.append(f'<rect x="{f1(x + 0.5)}" y="{f1(sy(k))}" width="{f1(bw - 1)}" height="{f1(sy(0) - sy(k))}" '
                        f'fill="{KEPT}"/>')
        if dr:
            body.append(f'<rect x="{f1(x + 0.5)}" y="{f1(sy(k + dr))}" width="{f1(bw - 1)}" '
                        f'height="{f1(sy(k) - sy(k + dr))}" fill="{DROPPED}"/>')
    xt = [10 ** e for e in range(math.ceil(a), math.floor(b) + 1)] if log else nice_ticks(a, b, 4)
    for t in xt:
        x = sx(float(tx(t)))
        body.append(f'<line x1="{f1(x)}" y1="{top + ph}" x2="{f1(x)}" y2="{top + ph + 4}" stroke="{AXIS}"/>'
                    f'<text x="{f1(x)}" y="{top + ph + 15}" font-size="10" fill="{MUTED}" text-anchor="middle">'
                    f'{short(t)}</text>')
    body.append(f'<line x1="{left}" y1="{top + ph}" x2="{left + pw}" y2="{top + ph}" stroke="{AXIS}"/>')
    for k, (x, label) in enumerate(list(lines) + list(markers)):
        color = "#b0303a" if k < len(lines) else "#333"
        px = sx(float(tx(x)))
        flip = px > left + pw * 0.65
        lx, anchor = (px - 3, "end") if flip else (px + 3, "start")
        body.append(f'<line x1="{f1(px)}" y1="{top - 2}" x2="{f1(px)}" y2="{top + ph}" stroke="{color}" '
                    f'stroke-width="1.5" stroke-dasharray="4 3"/><text x="{f1(lx)}" y="{top + 8 + 11 * k}" '
                    f'font-size="10" fill="{color}" text-anchor="{anchor}">{esc(label)}</text>')
    xl = xlabel + (" (log scale)" if log else "")
    if xl:
        body.append(f'<text x="{left + pw / 2}" y="{height - 3}" font-size="10.5" fill="{MUTED}" '
                    f'text-anchor="middle">{esc(xl)}</text>')
    return _svg(width, height, title, body)


def traces(series: list[tuple[str, np.ndarray, str, bool]], *, title: str, width: int = 330,
           height: int = 120, xlabel: str = "") -> str:
    """Line traces over the sample index: (name, y, colour, dashed). Long series are thinned to ~600 points."""
    left, right, top, bottom = 38, 8, 22, 22 if xlabel else 10
    pw, ph = width - left - right, height - top - bottom
    ys = [np.asarray(y, np.float64) for _, y, _, _ in series]
    finite = np.concatenate([y[np.isfinite(y)] for y in ys]) if ys else np.zeros(0)
    lo, hi = (float(finite.min()), float(finite.max())) if finite.size else (0.0, 1.0)
    if hi - lo < 1e-12:
        lo, hi = lo - 1, hi + 1
    n = max((len(y) for y in ys), default=1)
    body = [f'<line x1="{left}" y1="{top + ph}" x2="{left + pw}" y2="{top + ph}" stroke="{AXIS}"/>']
    for t in nice_ticks(lo, hi, 2):
        y = top + ph - (t - lo) / (hi - lo) * ph
        body.append(f'<line x1="{left}" y1="{f1(y)}" x2="{left + pw}" y2="{f1(y)}" stroke="{GRID}"/>'
                    f'<text x="{left - 4}" y="{f1(y + 3.5)}" font-size="10" fill="{MUTED}" text-anchor="end">'
                    f'{short(t)}</text>')
    for (name, _, color, dashed), y in zip(series, ys):
        step = max(1, len(y) // 600)
        idx = np.arange(0, len(y), step)
        px = left + idx / max(n - 1, 1) * pw
        py = top + ph - (np.nan_to_num(y[idx], nan=lo) - lo) / (hi - lo) * ph
        pts = " ".join(f"{f1(a)},{f1(b)}" for a, b in zip(px, py))
        dash = ' stroke-dasharray="3 2"' if dashed else ""
        body.append(f'<polyline points="{pts}" fill="none" stroke="{color}" stroke-width="1.3"{dash}>'
                    f'<title>{esc(name)}</title></polyline>')
    body += _legend([s[0] for s in series], [s[2] for s in series], 0, 14, right=width - 4)
    if xlabel:
        body.append(f'<text x="{left + pw / 2}" y="{height - 4}" font-size="10.5" fill="{MUTED}" '
                    f'text-anchor="middle">{esc(xlabel)}</text>')
    return _svg(width, height, title, body)
