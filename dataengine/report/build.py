"""`OUT/report.html`: one self-contained page that shows what a run did, built from OUT alone.

    OUT/manifest.json, stats.json, report_digest.json + report_sample.parquet (aggregates and a sample,
    computed by Ray tasks at the end of the run: report/digest.py), the few shards holding the rows
    shown, tokenizers/, vocab.json [, tokenizer_eval.json]
      -> ReportData -> sections (overview, inputs & rejects, stats vs thresholds,
         dedup, tokens & mixture, lengths, tokenizer fidelity + gallery, lineage)
      -> report.html (inline SVG plots, data: URI media, no scripts, no URLs)

The same OUT gives the same bytes: nothing depends on the clock, the machine
or dict order, and media are written by deterministic encoders.
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import polars as pl

from dataengine.errors import RecipeError
from dataengine.report.html import Section, esc, page
from dataengine.vocab import Vocab

REPORT_NAME = "report.html"
# the page's sections, in order (ids are anchors: report.html#tokens)
SECTION_IDS = ("overview", "inputs", "distributions", "dedup", "tokens", "lengths", "fidelity", "lineage")


@dataclass
class ReportData:
    out: Path
    manifest: dict
    stats: dict
    digest: dict                      # OUT/report_digest.json: aggregates computed by workers (report/digest.py)
    candidates: pl.DataFrame | None   # OUT/report_sample.parquet: a uniform sample of tokenized items' stats
    vocab: Vocab
    tokenizer_eval: dict | None
    _toks: dict | None = field(default=None, repr=False)

    @property
    def sources(self) -> dict[str, Path]:
        return {k: Path(v) for k, v in (self.manifest.get("sources") or {}).items()}

    def tokenizers(self) -> dict:
        """The run's own fitted tokenizers (OUT/tokenizers), loaded once."""
        if self._toks is None:
            from dataengine.pipeline.tokenize_stage import load_tokenizers

            self._toks = load_tokenizers(self.out / "tokenizers", sorted(self.vocab.tokenizers))
        return self._toks

    def rows(self, ids: list[str]) -> list[dict]:
        """Full sequence rows (every column) for `ids` the digest names, in the order given, with shard and row:
        only the shards that hold them are read."""
        seq = self.digest["sequences"]
        at = {e["id"]: e for k in seq["first"] for e in seq["first"][k]} | {e["id"]: e for e in seq["last"].values()}
        found: dict[str, dict] = {}
        for shard in sorted({at[i]["shard"] for i in ids if i in at}):
            part = pl.read_parquet(self.out / shard).with_row_index("row")
            for r in part.filter(pl.col("id").is_in(ids)).to_dicts():
                r["shard"] = shard
                found[r["id"]] = r
        return [found[i] for i in ids if i in found]


def load_report_data(out: Path) -> ReportData:
    from dataengine.report.digest import DIGEST_NAME, SAMPLE_NAME, load_digest

    out = Path(out)
    for name in ("manifest.json", "stats.json", "rejects.parquet", "vocab.json"):
        if not (out / name).is_file():
            raise RecipeError(f"{out} has no {name}; pass the --output folder of a finished `dataengine run`")
    for name in (DIGEST_NAME, SAMPLE_NAME):
        if not (out / name).is_file():
            raise RecipeError(f"{out} has no {name} (an output of an older dataengine): run `dataengine run` again")
    digest, sample = load_digest(out)
    eval_path = out / "tokenizer_eval.json"
    tok_eval = json.loads(eval_path.read_text()) if eval_path.is_file() else None
    return ReportData(out=out, manifest=json.loads((out / "manifest.json").read_text()),
                      stats=json.loads((out / "stats.json").read_text()), digest=digest,
                      candidates=sample if sample.height else None, vocab=Vocab.load(out / "vocab.json"),
                      tokenizer_eval=tok_eval)


def render_report(data: ReportData, *, gallery_per_kind: int = 2) -> str:
    from dataengine.report import gallery, lineage, sections, tokens

    built: list[Section] = [
        sections.overview(data),
        sections.inputs_and_rejects(data),
        sections.distributions(data),
        sections.dedup_clusters(data),
        tokens.tokens_and_mixture(data),
        tokens.lengths(data),
        gallery.fidelity(data, per_kind=gallery_per_kind),
        lineage.lineage(data),
    ]
    assert tuple(s.id for s in built) == SECTION_IDS
    m = data.manifest
    recipe = m.get("recipe", {})
    subtitle = (f"Recipe <b>{esc(recipe.get('name', '?'))}</b> (sha256 <code>{esc(str(recipe.get('sha256', ''))[:12])}"
                f"</code>, seed {esc(recipe.get('seed', '?'))}) · vocabulary "
                f"{m.get('vocab', {}).get('size', 0):,} ids · "
                f"dataengine {esc(m.get('code', {}).get('dataengine', '?'))}. Built from the files in this output "
                "folder; regenerate with <code>dataengine report OUT</code>.")
    return page(f"dataengine report: {recipe.get('name', data.out.name)}", subtitle, built)


def build_report(out: Path, *, gallery_per_kind: int = 2, log=None) -> Path:
    """Write `OUT/report.html` from a finished run's output folder; returns its path."""
    out = Path(out)
    data = load_report_data(out)
    text = render_report(data, gallery_per_kind=gallery_per_kind)
    path = out / REPORT_NAME
    tmp = out / f".{REPORT_NAME}.tmp"
    tmp.write_text(text, encoding="utf-8")
    tmp.replace(path)
    if log:
        log(f"report:    {path} ({path.stat().st_size / 2**20:.1f} MiB)")
    return path
