"""The SVG charts and number formats the report is made of."""
import re

import numpy as np

from dataengine.report.html import DROPPED, KEPT, num, table, Raw
from dataengine.report.plots import hbar, histogram, nice_ticks, traces


def rect_heights(svg: str, color: str) -> float:
    return sum(float(h) for h in re.findall(rf'height="([\d.]+)" fill="{color}"', svg))


def test_nice_ticks_cover_the_range_in_round_steps():
    for lo, hi in [(0, 1), (0, 37), (-3.2, 8.9), (1e-4, 3e-4), (0, 12345)]:
        t = nice_ticks(lo, hi, 4)
        assert lo <= t[0] < lo + (hi - lo) / 2 and t[-1] <= hi + 1e-12
        steps = np.diff(t)
        assert np.allclose(steps, steps[0]) and 2 <= len(t) <= 9


def test_histogram_marks_what_a_threshold_drops():
    v = np.arange(1.0, 21.0)
    out = v < 5
    svg = histogram(v, dropped=out, lines=[(5.0, "min 5")], title="x")
    assert rect_heights(svg, DROPPED) > 0 and rect_heights(svg, KEPT) > 0
    # bar heights are proportional to counts: 4 dropped vs 16 kept
    assert abs(rect_heights(svg, KEPT) / rect_heights(svg, DROPPED) - 4.0) < 0.1
    assert "min 5" in svg and "stroke-dasharray" in svg
    assert rect_heights(histogram(v, title="x"), DROPPED) == 0


def test_histogram_ignores_nan_handles_empty_and_constant_and_goes_log_for_tails():
    assert "no values" in histogram(np.array([np.nan, np.inf]), title="x")
    assert rect_heights(histogram(np.full(5, 3.0), title="x"), KEPT) > 0
    assert "log scale" in histogram(np.array([1.0, 10.0, 1e5]), title="x", xlabel="chars")
    assert "log scale" not in histogram(np.array([1.0, 2.0, 3.0]), title="x", xlabel="chars")


def test_bars_escape_labels_and_stack():
    svg = hbar(["<b>&"], {"a": [2], "b": [3]}, stacked=True, title="t")
    assert "<b>&" not in svg and "&lt;b&gt;&amp;" in svg
    widths = [float(w) for w in re.findall(r'width="([\d.]+)" height="13"', svg)]
    assert len(widths) == 2 and abs(widths[1] / widths[0] - 1.5) < 0.01


def test_traces_draw_one_line_per_series_and_are_deterministic():
    y = np.sin(np.linspace(0, 6, 5000))
    svg = traces([("original", y, "#000", False), ("reconstruction", y * 0.9, "#333", True)], title="accel_x")
    assert svg.count("<polyline") == 2 and svg.count("stroke-dasharray") == 1
    assert len(re.search(r'points="([^"]+)"', svg).group(1).split()) <= 1000  # long series are thinned
    assert svg == traces([("original", y, "#000", False), ("reconstruction", y * 0.9, "#333", True)], title="accel_x")


def test_numbers_read_well():
    assert num(1234567) == "1,234,567" and num(12.0) == "12" and num(0.123456) == "0.123"
    assert num(None) == "–" and num(float("nan")) == "–" and num(True) == "true" and num(3.5e-5) == "3.5e-05"
    html = table(["a", "n"], [[Raw("<i>x</i>"), 1000], ["<y>", 2.5]], numeric={1})
    assert "<i>x</i>" in html and "&lt;y&gt;" in html and '<td class="n">1,000</td>' in html
