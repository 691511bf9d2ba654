"""report.html in headless Chromium: no console error, no request made by the page, every image and player loads.

Needs Debian's `chromium` (apt-get install -y chromium); skipped without it. A
request counts as the page's when the network log files it under the page's
file:// site; the browser's own background calls (update checks) are not the
report's. A control page with a remote image and a script error proves the
checks catch both.
"""
import json
import shutil
import subprocess

import pytest

from dataengine.report import build_report
from dataengine.report.build import SECTION_IDS

CHROMIUM = next((p for p in map(shutil.which, ("chromium", "chromium-browser", "google-chrome")) if p), None)
pytestmark = pytest.mark.skipif(CHROMIUM is None,
                                reason="headless Chromium not installed (apt-get install -y chromium)")

FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
         "--disable-component-update", "--no-first-run", "--disable-sync", "--disable-default-apps",
         "--enable-logging=stderr", "--v=0", "--virtual-time-budget=10000"]

# counts what loaded, once the page has settled; added to a test copy only (the report itself has no script)
PROBE = """<script>
window.addEventListener('load', () => setTimeout(() => {
  const imgs = [...document.images], auds = [...document.querySelectorAll('audio')], b = document.body;
  b.dataset.images = imgs.length;
  b.dataset.brokenImages = imgs.filter(i => !(i.complete && i.naturalWidth > 0)).length;
  b.dataset.audio = auds.length;
  b.dataset.audioReady = auds.filter(a => a.error === null && a.readyState >= 1 && a.duration > 0).length;
}, 2000));
</script>"""


def load(page, tmp_path):
    """(DOM after load, console lines, URLs the page requested)."""
    tmp_path.mkdir(parents=True, exist_ok=True)
    netlog = tmp_path / "netlog.json"
    proc = subprocess.run([CHROMIUM, *FLAGS, f"--user-data-dir={tmp_path / 'profile'}", f"--log-net-log={netlog}",
                           "--dump-dom", page.as_uri()], capture_output=True, text=True, timeout=180)
    assert proc.returncode == 0, proc.stderr[-2000:]
    console = [line for line in proc.stderr.splitlines() if ":CONSOLE" in line]
    return proc.stdout, console, page_requests(json.loads(netlog.read_text()))


def page_requests(netlog: dict) -> list[str]:
    names = {v: k for k, v in netlog["constants"]["logEventTypes"].items()}
    urls = []
    for e in netlog["events"]:
        p = e.get("params") or {}
        from_page = "file://" in str(p.get("network_isolation_key", ""))  # the report's own site
        if names.get(e["type"]) == "URL_REQUEST_START_JOB" and "url" in p and from_page \
                and not p["url"].startswith(("file:", "data:")):
            urls.append(p["url"])
    return urls


@pytest.fixture(scope="module")
def report_path(report_out):
    return build_report(report_out)


def test_the_checks_catch_a_request_and_a_script_error(tmp_path):
    bad = tmp_path / "bad.html"
    bad.write_text('<!DOCTYPE html><html><head><title>bad</title></head><body><p id="a">x</p>'
                   '<img src="http://127.0.0.1:9/x.png"><script>undefined_function();</script></body></html>')
    dom, console, requests = load(bad, tmp_path / "run")
    assert 'id="a"' in dom
    assert any("undefined_function" in line for line in console), console
    assert "http://127.0.0.1:9/x.png" in requests, requests


def test_report_loads_without_errors_or_requests(report_path, tmp_path):
    dom, console, requests = load(report_path, tmp_path)
    assert console == [], console
    assert requests == [], requests
    for sid in SECTION_IDS:
        assert f'<section id="{sid}">' in dom, sid


def test_every_image_and_player_loads(report_path, tmp_path):
    text = report_path.read_text(encoding="utf-8")
    text = text.replace("style-src 'unsafe-inline'", "style-src 'unsafe-inline'; script-src 'unsafe-inline'", 1)
    probe = tmp_path / "probe.html"
    probe.write_text(text.replace("</body>", PROBE + "</body>"), encoding="utf-8")
    dom, console, requests = load(probe, tmp_path / "run")
    assert console == [] and requests == []
    body = dom[dom.index("<body"):dom.index(">", dom.index("<body"))]
    got = dict(kv.split("=") for kv in body.replace('"', "").split()[1:])
    assert int(got["data-images"]) >= 8 and got["data-broken-images"] == "0", got
    assert int(got["data-audio"]) >= 2 and got["data-audio-ready"] == got["data-audio"], got
