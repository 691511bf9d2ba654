"""The README's picture of a report: its top and a slice of the gallery, via headless Chromium.

    python -m dataengine.report.screenshot out/demo/report.html docs/report.png

Needs Debian's `chromium` (apt-get install -y chromium). The report itself has
no script; a temporary copy gets one that measures where the gallery starts.
"""
from __future__ import annotations

import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
         "--disable-component-update", "--no-first-run", "--hide-scrollbars"]
MEASURE = ("<script>window.addEventListener('load', () => {const g = document.getElementById('gallery');"
           "document.body.dataset.g = Math.round(g ? g.getBoundingClientRect().top + scrollY : 0);"
           "document.body.dataset.h = document.body.scrollHeight;});</script></body>")
WIDTH, TOP, SLICE = 1280, 1010, 1100


def screenshot(report: Path, dest: Path) -> Path:
    from PIL import Image

    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    if chromium is None:
        raise SystemExit("headless Chromium is not installed: apt-get install -y chromium")
    text = Path(report).read_text(encoding="utf-8")
    text = text.replace("style-src 'unsafe-inline'", "style-src 'unsafe-inline'; script-src 'unsafe-inline'", 1)
    with tempfile.TemporaryDirectory() as tmp:
        probe = Path(tmp) / "probe.html"
        probe.write_text(text.replace("</body>", MEASURE, 1), encoding="utf-8")
        run = [chromium, *FLAGS, f"--user-data-dir={Path(tmp) / 'profile'}"]
        dom = subprocess.run(run + [f"--window-size={WIDTH},1000", "--dump-dom", probe.as_uri()],
                             capture_output=True, text=True, timeout=180).stdout
        gallery = int(re.search(r'data-g="(\d+)"', dom).group(1))
        height = int(re.search(r'data-h="(\d+)"', dom).group(1))
        full = Path(tmp) / "full.png"
        page = Path(report).resolve().as_uri()
        subprocess.run(run + [f"--window-size={WIDTH},{height}", f"--screenshot={full}", page],
                       capture_output=True, timeout=180, check=True)
        im = Image.open(full).convert("RGB")
    parts = [im.crop((0, 0, WIDTH, TOP))]
    if gallery:
        parts.append(im.crop((0, gallery - 10, WIDTH, min(gallery + SLICE - 10, im.height))))
    out = Image.new("RGB", (WIDTH, sum(p.height for p in parts) + 14 * (len(parts) - 1)), (246, 247, 249))
    y = 0
    for p in parts:
        out.paste(p, (0, y))
        y += p.height + 14
    dest = Path(dest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    out.quantize(colors=256, method=Image.Quantize.MEDIANCUT, dither=Image.Dither.NONE).save(dest, optimize=True)
    return dest


if __name__ == "__main__":
    if len(sys.argv) != 3:
        raise SystemExit("usage: python -m dataengine.report.screenshot OUT/report.html docs/report.png")
    print(screenshot(Path(sys.argv[1]), Path(sys.argv[2])))
