"""`OUT/report.html`: one self-contained page that shows what a run did, built from OUT alone.

    OUT/manifest.json, stats.json, rejects.parquet, parquet/*.parquet,
    cache/candidates/*.parquet, tokenizers/, vocab.json [, tokenizer_eval.json]
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
LIGHT_COLUMNS = ["id", "split", "source", "task", "kind", "num_tokens", "repeat", "dup_cluster"]


@dataclass
class ReportData:
    out: Path
    manifest: dict
    stats: dict
    rejects: pl.DataFrame
    seq: pl.DataFrame                 # LIGHT_COLUMNS + shard (parquet path relative to OUT) + row (index in it)
    candidates: pl.DataFrame | None   # OUT/cache/candidates/ (every tokenized item before curation)
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
        """Full sequence rows (every column) for `ids`, in the order given, with shard and row."""
        if not ids:
            return []
        want = self.seq.filter(pl.col("id").is_in(ids))
        found: dict[str, dict] = {}
        for shard in sorted(set(want["shard"].to_list())):
            part = pl.read_parquet(self.out / shard).with_row_index("row")
            for r in part.filter(pl.col("id").is_in(ids)).to_dicts():
                r["shard"] = shard
                found[r["id"]] = r
        return [found[i] for i in ids if i in found]


def load_report_data(out: Path) -> ReportData:
    out = Path(out)
    for name in ("manifest.json", "stats.json", "rejects.parquet", "vocab.json"):
        if not (out / name).is_file():
            raise RecipeError(f"{out} has no {name}; pass the --output folder of a finished `dataengine run`")
    manifest = json.loads((out / "manifest.json").read_text())
    stats = json.loads((out / "stats.json").read_text())
    parts = []
    for s in sorted((sh for sh in manifest.get("shards", []) if sh.get("format") == "parquet"),
                    key=lambda sh: sh["path"]):
        df = pl.read_parquet(out / s["path"], columns=LIGHT_COLUMNS).with_row_index("row")
        parts.append(df.with_columns(pl.lit(s["path"]).alias("shard")))
    schema = {"row": pl.UInt32, "id": pl.String, "split": pl.String, "source": pl.String, "task": pl.String,
              "kind": pl.String, "num_tokens": pl.Int32, "repeat": pl.Int32, "dup_cluster": pl.String,
              "shard": pl.String}
    seq = pl.concat(parts) if parts else pl.DataFrame(schema=schema)
    from dataengine.pipeline.cache import candidate_files

    cand = candidate_files(out)
    candidates = pl.concat([pl.read_parquet(p) for p in cand], how="vertical_relaxed") if cand else None
    eval_path = out / "tokenizer_eval.json"
    tok_eval = json.loads(eval_path.read_text()) if eval_path.is_file() else None
    return ReportData(out=out, manifest=manifest, stats=stats, rejects=pl.read_parquet(out / "rejects.parquet"),
                      seq=seq, candidates=candidates, vocab=Vocab.load(out / "vocab.json"), tokenizer_eval=tok_eval)


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
