"""Tokenizer fidelity: the tokenizers' cards and held-out metrics, reconstruction error per kind, and a
gallery of originals beside what their tokens decode back to.

Reconstructions come from `dataengine.inspect.decode_sequence` (the same code as
`dataengine inspect --decode`), run on written sequences with the tokenizers
OUT carries; originals are read back from the input folders named in the
manifest (`media.decode_original`).
"""
from __future__ import annotations

import json
import tempfile
from pathlib import Path

import numpy as np
import polars as pl
import yaml

from dataengine.report import media
from dataengine.report.html import MODALITY_COLORS, Section, audio, esc, figure, img, num, table
from dataengine.report.plots import PALETTE, histogram, traces
from dataengine.report.sections import ok_candidates, sampled

GALLERY_KINDS = ("image", "video", "audio", "sensor", "text", "chat")
MAX_CHANNELS = 3
# headline metrics per role (the keys `dataengine tokenizers eval` writes); dataengine.evaluate.run imports
# Ray and every evaluator, too heavy to load for a table
HEADLINE = {
    "text": ("bytes_per_token", "baseline_bytes_per_token", "tokens_per_item"),
    "image": ("psnr", "baseline_psnr", "ssim", "baseline_ssim", "tokens_per_item", "utilization"),
    "video": ("psnr", "ssim", "tokens_per_second", "frames_psnr"),
    "audio": ("mel_l1", "baseline_mel_l1", "tokens_per_second", "utilization"),
    "sensor": ("rmse", "max_abs_error", "within_bound", "tokens_per_second"),
}


def fidelity(data, *, per_kind: int = 2) -> Section:
    body = _tokenizer_table(data)
    body += _recon_hists(data)
    body += '<h3 id="gallery">Gallery: originals and their reconstructions</h3>'
    body += ("<p class=\"note\">Left: the original file, as the tokenizer saw it (images centre-cropped to a square, "
             "audio at the tokenizer's rate). Right: the sequence's tokens decoded back. Small reconstructions are "
             "enlarged with visible pixels. Sensor traces: original solid, reconstruction dashed.</p>")
    body += _gallery(data, per_kind)
    return Section("fidelity", "Tokenizer fidelity",
                   "How much each tokenizer keeps: its card, its held-out metrics, the reconstruction error of every "
                   "item, and a few items decoded back from their tokens next to the originals.", body)


def _tokenizer_table(data) -> str:
    full = data.tokenizer_eval or {}
    rows = []
    for role in sorted(data.vocab.tokenizers):
        folder = data.out / "tokenizers" / role
        card = yaml.safe_load((folder / "card.yaml").read_text()) if (folder / "card.yaml").is_file() else {}
        ev = full.get(role) or (json.loads((folder / "eval.json").read_text()) if (folder / "eval.json").is_file()
                                else {})
        per_unit = ", ".join(f"{k.replace('tokens_per_', 'per ')} {num(v)}"
                             for k, v in sorted((card.get("tokens_per_unit") or {}).items()))
        metrics = ", ".join(f"{k} {num(float(ev[k]))}" for k in HEADLINE.get(role, ())
                            if isinstance(ev.get(k), (int, float)) and not isinstance(ev.get(k), bool))
        if ev.get("error"):
            metrics = f"error: {ev['error']}"
        rows.append([role, card.get("family", "?"), str(card.get("version", "?")), card.get("vocab_size", 0),
                     per_unit, ev.get("items", "–"), metrics or "–"])
    src = ("<code>tokenizer_eval.json</code> (<code>dataengine tokenizers eval</code>)" if full else
           "each tokenizer's <code>eval.json</code>, written when it was fitted")
    return ("<h3>Tokenizers</h3>" + table(["role", "family", "version", "codebook", "tokens per unit", "eval items",
                                            "held-out metrics"], rows, numeric={3, 5})
            + f"<p class=\"note\">Metrics from {src}; baselines spend the same bits on a plain downsample or "
              "codec.</p>")


def _recon_hists(data) -> str:
    ok = ok_candidates(data)
    if ok is None or ok.height == 0:
        return ""
    mse = ok.select(pl.col("kind"), pl.col("stats").str.json_path_match("$.token_recon_mse").cast(pl.Float64)
                    .alias("mse")).drop_nulls()
    if mse.height == 0:
        return "<p class=\"note\">No reconstruction errors were measured (recipe <code>curate.token_recon</code>).</p>"
    figs = []
    units = {"image": "pixel MSE, [0,1] scale", "video": "pixel MSE, [0,1] scale", "audio": "log-mel MSE",
             "sensor": "MSE / channel variance"}
    for kind in sorted(set(mse["kind"].to_list())):
        v = mse.filter(pl.col("kind") == kind)["mse"].to_numpy()
        med = float(np.median(v))
        svg = histogram(v, title=f"{kind}: token_recon_mse ({len(v):,})", bins=24, width=300, height=170,
                        xlabel=units.get(kind, ""), markers=[(med, f"median {num(med)}")])
        figs.append(svg.replace('fill="#4c78a8"', f'fill="{MODALITY_COLORS.get(kind, "#4c78a8")}"'))
    return (f"<h3>Reconstruction error per item</h3><p class=\"note\">Measured on {sampled(data, ok.height)}.</p>"
            "<div class=\"grid\">" + "".join(figs) + "</div>")


def pick_gallery(data, per_kind: int) -> list[str]:
    """`per_kind` sequences per kind (at most digest.FIRST_IDS), smallest ids first: deterministic."""
    first = data.digest["sequences"]["first"]
    return [e["id"] for kind in GALLERY_KINDS for e in first.get(kind, [])[:per_kind]]


def _gallery(data, per_kind: int) -> str:
    from dataengine.inspect import decode_sequence

    rows = data.rows(pick_gallery(data, per_kind))
    if not rows:
        return "<p>No sequences to show.</p>"
    toks = data.tokenizers()
    out = []
    with tempfile.TemporaryDirectory() as tmp:
        for k, row in enumerate(rows):
            folder = Path(tmp) / f"{k:03d}"
            folder.mkdir()
            try:
                files = decode_sequence(row, data.vocab, toks, folder)
                out.append(_pair(data, row, files, toks))
            except Exception as e:  # one item that cannot be shown must not sink the report
                out.append(f'<div class="pair"><p class="report-error">{esc(row["kind"])} {esc(row["id"])}: could not '
                           f"decode ({esc(type(e).__name__)}: {esc(str(e)[:200])})</p></div>")
    return "".join(out)


def _pair(data, row: dict, files: list[Path], toks: dict) -> str:
    kind = row["kind"]
    meta = json.loads(row["meta"])
    lineage = row["lineage"] or []
    main = next((lin for lin in lineage if lin["role"] in ("media", "document", "record")), lineage[0] if lineage
                else {"path": "?"})
    sidecar = next((lin["path"] for lin in lineage if lin["role"] == "sidecar"), None)
    src = media.source_file(data.sources, row["source"], main["path"])
    by_ext = {p.suffix: p for p in files}
    seq_text = by_ext[".txt"].read_text().strip() if ".txt" in by_ext else ""
    mse = (row.get("stats") or {}).get("token_recon_mse")
    info = (f'<div class="meta"><b>{esc(kind)}</b> · task <code>{esc(row["task"])}</code><br>'
            f'<code>{esc(row["source"])}/{esc(main["path"])}</code><br>{row["num_tokens"]:,} tokens'
            + (f", recon MSE {num(float(mse))}" if mse is not None else "")
            + (f"<br>“{esc(str(meta.get('text'))[:160])}”" if meta.get("text") and kind not in ("text",) else "")
            + ("" if kind in ("text", "chat") else
               f'<pre class="text" style="max-width:330px;max-height:90px;margin-top:6px">{esc(seq_text[:600])}</pre>')
            + "</div>")
    sr = int(toks["audio"].params["sample_rate"]) if "audio" in toks else 16000
    if kind in ("text", "chat"):
        original = _original_text(src, meta, kind)
        left = figure(f'<pre class="text" style="width:380px">{esc(original[:1500])}</pre>', "original")
        right = figure(f'<pre class="text" style="width:380px">{esc(seq_text[:1500])}</pre>', "decoded from tokens")
        return f'<div class="pair">{info}{left}{right}</div>'
    if src is None:
        left = figure('<i class="report-error">original not found</i>', esc(main["path"]))
    else:
        left = _original_figure(kind, src, meta, sr, data.sources.get(row["source"]), sidecar)
    return f'<div class="pair">{info}{left}{_recon_figure(kind, by_ext, meta, sr, src, data, row, sidecar)}</div>'


def _original_text(src: Path | None, meta: dict, kind: str) -> str:
    rec = meta.get("record")
    if rec and "messages" in rec:
        return "\n".join(f"{m['role']}: {m['content']}" for m in rec["messages"])
    if rec and "text" in rec:
        return str(rec["text"])
    if meta.get("text"):
        return str(meta["text"])
    return media.read_text(src) if src else "(original not found)"


def _original_figure(kind: str, src: Path, meta: dict, sr: int, root, sidecar: str | None) -> str:
    side = None if sidecar is None or root is None else Path(root) / sidecar
    value = media.decode_original(kind, src, meta, sample_rate=sr, sidecar_path=side)
    if kind == "image":
        return figure(img(media.png_bytes(media.square(value)), "image/png", f"original {src.name}"), "original")
    if kind == "video":
        frames, fps = value
        small = np.stack([media.square(f, 96) for f in frames])
        return figure(img(media.gif_bytes(small, fps), "image/gif", f"original {src.name}", 128, 128),
                      f"original ({len(frames)} frames at {fps:g} fps)")
    if kind == "audio":
        return figure(audio(media.wav_bytes(value, sr), f"original {src.name}") + "<br>"
                      + img(media.spectrogram_png(value, sr), "image/png", "original spectrogram"),
                      f"original ({len(value) / sr:.1f} s, first {media.MAX_AUDIO_S:g} s)")
    if kind == "sensor":
        values, channels = value
        return figure(_sensor_traces(values, None, channels), f"original ({len(values):,} rows)")
    return ""


def _recon_figure(kind: str, by_ext: dict, meta: dict, sr: int, src, data, row, sidecar) -> str:
    if kind == "image" and ".png" in by_ext:
        from PIL import Image

        rec = np.asarray(Image.open(by_ext[".png"]).convert("RGB"))
        return figure(img(media.png_bytes(media.upscale(rec)), "image/png", "reconstruction"),
                      f"from tokens ({rec.shape[1]}x{rec.shape[0]} px)")
    if kind == "video" and ".gif" in by_ext:
        parts = [img(by_ext[".gif"].read_bytes(), "image/gif", "reconstruction", 128, 128)]
        if ".wav" in by_ext:
            parts.append("<br>" + _wav_player(by_ext[".wav"], "reconstructed soundtrack"))
        return figure("".join(parts), "from tokens")
    if kind == "audio" and ".wav" in by_ext:
        import soundfile as sf

        wave, rate = sf.read(by_ext[".wav"], dtype="float32")
        return figure(audio(media.wav_bytes(wave, rate), "reconstruction") + "<br>"
                      + img(media.spectrogram_png(wave, rate), "image/png", "reconstruction spectrogram"),
                      f"from tokens ({len(wave) / rate:.1f} s)")
    if kind == "sensor" and ".csv" in by_ext:
        rec = pl.read_csv(by_ext[".csv"])
        original = None
        if src is not None:
            root = data.sources.get(row["source"])
            side = None if sidecar is None or root is None else Path(root) / sidecar
            original = media.decode_original("sensor", src, meta, sample_rate=sr, sidecar_path=side)[0]
        return figure(_sensor_traces(original, rec.to_numpy(), rec.columns), "reconstruction, per channel")
    return figure("<i>no media span</i>", "")


def _wav_player(path: Path, label: str) -> str:
    import soundfile as sf

    wave, rate = sf.read(path, dtype="float32")
    return audio(media.wav_bytes(wave, rate), label)


def _sensor_traces(original: np.ndarray | None, recon: np.ndarray | None, channels: list[str]) -> str:
    """One small chart per channel (first MAX_CHANNELS); original solid, reconstruction dashed."""
    charts = []
    for c in range(min(MAX_CHANNELS, len(channels))):
        series = []
        if original is not None and c < original.shape[1]:
            n = len(original) if recon is None else min(len(original), len(recon))
            series.append(("original", original[:n, c], PALETTE[c], False))
        if recon is not None and c < recon.shape[1]:
            series.append(("reconstruction", recon[:, c], "#333333", True))
        charts.append(traces(series, title=str(channels[c]), width=300, height=96))
    return "<br>".join(charts)
