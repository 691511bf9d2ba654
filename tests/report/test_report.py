"""report.html for a real small OUT: every section, only embedded media that decode, no URL, same bytes twice."""
import argparse
import base64
import json
import re
import shutil
from html.parser import HTMLParser
from pathlib import Path

import polars as pl
import pytest

from dataengine.report import build_report
from dataengine.report.build import SECTION_IDS
from dataengine.report.cli import add_report_command

MAGIC = {"image/png": b"\x89PNG\r\n\x1a\n", "image/gif": b"GIF89a", "audio/wav": b"RIFF"}


class Page(HTMLParser):
    """Collects ids, hrefs, and the src of every img / audio / source / script / link / iframe."""

    def __init__(self):
        super().__init__()
        self.ids, self.hrefs, self.media, self.tags, self.h2 = set(), [], [], [], []
        self._in_h2 = False

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        self.tags.append(tag)
        if "id" in a:
            self.ids.add(a["id"])
        if "href" in a:
            self.hrefs.append(a["href"])
        if tag in ("img", "audio", "video", "source", "script", "iframe", "embed", "object", "link"):
            self.media.append((tag, a.get("src") or a.get("href") or a.get("data")))
        self._in_h2 = tag == "h2"

    def handle_data(self, data):
        if self._in_h2:
            self.h2.append(data)
            self._in_h2 = False


@pytest.fixture(scope="module")
def report(report_out):
    path = build_report(report_out)
    text = path.read_text(encoding="utf-8")
    page = Page()
    page.feed(text)
    return {"path": path, "text": text, "page": page, "out": report_out,
            "stats": json.loads((report_out / "stats.json").read_text())}


def test_every_section_is_there_and_in_the_contents(report):
    page = report["page"]
    assert set(SECTION_IDS) <= page.ids
    assert [h for h in page.hrefs if h.startswith("#")] == [f"#{s}" for s in SECTION_IDS]
    assert len(page.h2) == len(SECTION_IDS)
    assert 'class="report-error"' not in report["text"]  # every original found, every sequence decoded


def test_media_are_data_uris_that_decode(report):
    kinds = {}
    for tag, src in report["page"].media:
        assert tag in ("img", "audio"), f"unexpected <{tag}>: the report has no scripts, frames or links"
        m = re.fullmatch(r"data:([a-z]+/[a-z0-9.+-]+);base64,([A-Za-z0-9+/=]+)", src or "")
        assert m, f"<{tag}> src is not a base64 data: URI: {str(src)[:80]}"
        payload = base64.b64decode(m.group(2), validate=True)
        assert payload.startswith(MAGIC[m.group(1)]), (m.group(1), payload[:12])
        if m.group(1) == "audio/wav":
            assert payload[8:12] == b"WAVE"
        kinds[m.group(1)] = kinds.get(m.group(1), 0) + 1
    # thumbnails, spectrograms, dedup members (PNG), video (GIF), players (WAV): every medium shows up
    assert kinds.get("image/png", 0) >= 6 and kinds.get("image/gif", 0) >= 2 and kinds.get("audio/wav", 0) >= 2, kinds
    assert report["text"].count("<svg") >= 10  # plots are inline SVG


def test_no_url_of_any_kind(report):
    text = report["text"]
    assert not re.search(r"(?i)\b(https?|ftp|wss?):", text)
    assert not re.search(r"""(?i)(src|href|action|data)\s*=\s*["']?//""", text)
    assert "url(" not in text and "@import" not in text
    assert all(h.startswith("#") for h in report["page"].hrefs)
    assert "default-src 'none'" in text  # the page may not fetch anything even if a URL slipped in


def test_same_out_gives_the_same_bytes(report):
    first = report["path"].read_bytes()
    again = build_report(report["out"]).read_bytes()
    assert first == again
    assert len(first) < 5 * 2**20, f"{len(first) / 2**20:.1f} MiB: keep media to thumbnails"


def test_it_shows_this_runs_numbers(report):
    """Sections are filled from OUT: every reject reason, every threshold, every kind, every lineage shard."""
    text, stats = report["text"], report["stats"]
    for key in stats["rejects"]["by_stage_reason"]:
        stage, reason = key.split("/")
        assert f"<td>{stage}</td><td>{reason}</td>" in text, key
    for stat, rule in stats["curate"]["filters"]["rules"].items():
        assert f"<title>{stat}</title>" in text, stat  # its histogram
        for bound, value in rule.items():
            if isinstance(value, (int, float)) and not isinstance(value, bool):
                assert f"{bound} {value:g}" in text, (stat, bound)
    assert "image_width_below_min" in text and "exact duplicate" in text and "chelsea_copy.png" in text
    for kind in stats["sequences"]["by_kind"]:
        assert f"<b>{kind}</b> · task" in text, f"gallery misses kind {kind}"
    for group in stats["curate"]["mixture"]["groups"]:
        assert f"<td>{group}</td>" in text
    seq = pl.read_parquet(report["out"] / "parquet" / "*.parquet")
    chains = re.findall(r"<code>(parquet/[\w.-]+)</code> row (\d+) .*?key <code>(\w+)</code>", text)
    assert len(chains) >= 5
    for shard, row, key in chains:  # the lineage names the row that holds the sample
        assert pl.read_parquet(report["out"] / shard)["id"][int(row)] == key
        assert key in set(seq["id"])
    assert text.count("unchanged)") >= len(chains)  # input files re-hashed and found intact


def test_report_subcommand_regenerates_it(report, capsys):
    (report["out"] / "report.html").unlink()
    parser = argparse.ArgumentParser(prog="dataengine")
    add_report_command(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(["report", str(report["out"]), "--gallery", "1"])
    assert args.fn(args) == 0
    assert (report["out"] / "report.html").is_file()
    assert "report.html" in capsys.readouterr().out


def test_a_folder_that_is_not_an_out_says_how_to_fix_it(tmp_path):
    from dataengine.errors import RecipeError

    with pytest.raises(RecipeError, match="dataengine run"):
        build_report(tmp_path)


def test_the_report_reads_no_candidates_and_only_the_shards_it_shows(report, tmp_path, monkeypatch):
    """Built from the digest: OUT without cache/ and webdataset tars gives the same page, byte for byte, and
    the only shards read are those holding the rows the digest names."""
    digest = json.loads((report["out"] / "report_digest.json").read_text())
    seq = digest["sequences"]
    named = {e["shard"] for es in seq["first"].values() for e in es} | {e["shard"] for e in seq["last"].values()}
    out = tmp_path / report["out"].name
    shutil.copytree(report["out"], out, ignore=lambda d, names: [n for n in names if n in ("cache", "wds")])
    read = []
    real = pl.read_parquet
    monkeypatch.setattr(pl, "read_parquet", lambda source, *a, **k: read.append(Path(source)) or real(source, *a, **k))
    assert build_report(out).read_bytes() == build_report(report["out"]).read_bytes()
    mine = [p.relative_to(out).as_posix() for p in read if out in p.parents]
    shards = [p for p in mine if p.startswith("parquet/")]
    assert set(mine) - set(shards) <= {"report_sample.parquet"}  # no candidates, no rejects table
    assert shards and set(shards) <= named and len(shards) <= 2 * len(named)  # the gallery, then the lineage


def test_the_digest_counts_what_the_files_hold(report):
    out = report["out"]
    digest = json.loads((out / "report_digest.json").read_text())
    cand = pl.read_parquet(out / "cache" / "candidates" / "*.parquet").filter(pl.col("status") == "ok")
    assert digest["candidates"]["ok"] == cand.height
    assert digest["candidates"]["ok_by_kind"] == dict(sorted(cand.group_by("kind").len().rows()))
    sample = pl.read_parquet(out / "report_sample.parquet")
    assert sorted(sample["id"]) == sorted(cand["id"])  # a small run: the sample is every item
    seq = pl.read_parquet(out / "parquet" / "*.parquet")
    for kind, entries in digest["sequences"]["first"].items():
        assert [e["id"] for e in entries] == seq.filter(pl.col("kind") == kind)["id"].sort().head(8).to_list()
        assert digest["sequences"]["last"][kind]["id"] == seq.filter(pl.col("kind") == kind)["id"].max()
    for task, pairs in ((k.split(":", 1)[1], v) for k, v in digest["sequences"]["lengths"].items()
                        if k.startswith("task:")):
        lengths = seq.filter(pl.col("task") == task)["num_tokens"]
        assert sum(c for _, c in pairs) == lengths.len() and sum(n * c for n, c in pairs) == lengths.sum()
    rej = pl.read_parquet(out / "rejects.parquet")
    assert sum(k["files"] for k in digest["rejects"]["keys"]) == rej.height
    assert {f"{k['stage']}/{k['reason']}" for k in digest["rejects"]["keys"]} == set(report["stats"]["rejects"]["by_stage_reason"])
    kept = rej.filter(pl.col("reason") == "exact_duplicate")["detail"].str.extract(r"kept id (\S+)", 1).to_list()
    assert kept and {c["kept"] for c in digest["rejects"]["clusters"]} == set(kept)
