"""`dataengine inspect`: counts of a finished run, and sequences decoded back to media.

Decoding uses only what OUT carries (`vocab.json` and `tokenizers/`), so an
output folder can be inspected anywhere. Each decoded sequence becomes a folder
with `sequence.txt` (the whole sequence, text decoded and media summarised) and
one file per media span, by its modality's writer: PNG (image), GIF (video), WAV (audio), CSV (sensor). An
interleaved document also gets `document.md`: its text segments decoded, in order,
with each image or sound linked where it stands.
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import polars as pl

from dataengine import modalities
from dataengine.errors import RecipeError
from dataengine.pipeline.tokenize_stage import load_tokenizers
from dataengine.vocab import NUM_SPECIALS, Vocab

TEXT = modalities.TEXT


def load_output(out: Path) -> tuple[dict, dict]:
    out = Path(out)
    if not (out / "manifest.json").is_file():
        raise RecipeError(f"{out} has no manifest.json; pass the --output folder of a finished `dataengine run`")
    return json.loads((out / "manifest.json").read_text()), json.loads((out / "stats.json").read_text())


def summary_lines(out: Path) -> list[str]:
    manifest, stats = load_output(out)
    lines = [f"{out}: {stats['sequences']['total']} sequences, {stats['tokens']['total']} tokens, "
             f"{stats['rejects']['total']} rejects, vocab {manifest['vocab']['size']} ids"]

    def block(title: str, counts: dict) -> None:
        if counts:
            lines.append(f"  {title}:")
            width = max(len(k) for k in counts)
            lines.extend(f"    {k:<{width}}  {v:>10}" for k, v in counts.items())

    block("inputs by kind", stats["inputs"]["by_kind"])
    block("sequences by split", stats["sequences"].get("by_split", {}))
    block("sequences by task", stats["sequences"].get("by_task", {}))
    block("sequences by source", stats["sequences"].get("by_source", {}))
    block("tokens by modality", stats["tokens"].get("by_modality", {}))
    block("rejects by stage/reason", stats["rejects"]["by_stage_reason"])
    lines.extend(mixture_lines(stats.get("curate", {}).get("mixture", {})))
    return lines


def mixture_lines(report: dict) -> list[str]:
    """Tokens per source/kind of the train split: available, target and achieved, with shares."""
    groups = report.get("groups") or {}
    if not groups:
        return []
    width = max(len(g) for g in groups)
    lines = [f"  mixture ({report.get('policy', '?')}), train tokens per source/kind:",
             f"    {'group':<{width}}  {'available':>10}  {'target':>10}  {'achieved':>10}  "
             f"{'target %':>8}  {'achieved %':>10}  {'epochs':>6}"]
    for g, r in sorted(groups.items()):
        lines.append(f"    {g:<{width}}  {r['available_tokens']:>10}  {round(r['target_tokens']):>10}  "
                     f"{r['achieved_tokens']:>10}  {100 * r['target_share']:>8.2f}  "
                     f"{100 * r['achieved_share']:>10.2f}  {r['epochs']:>6.2f}")
    return lines


def pick_sequences(out: Path, n: int) -> list[dict]:
    """`n` sequences, round-robin over tasks in (task, id) order (deterministic), so every modality shows up.
    Reads the shards' task and id columns one shard at a time, then only the rows picked."""
    files = sorted((Path(out) / "parquet").glob("*.parquet"))
    if not files or n <= 0:
        return []
    best: dict[str, list[tuple[str, Path]]] = {}  # per task, the n smallest ids and their shard
    for f in files:
        for (task,), g in pl.read_parquet(f, columns=["task", "id"]).group_by("task"):
            best[task] = sorted(best.get(task, []) + [(i, f) for i in g["id"].sort().head(n).to_list()])[:n]
    chosen, i = [], 0
    while len(chosen) < n and any(i < len(v) for v in best.values()):
        for task in sorted(best, key=str):
            if i < len(best[task]) and len(chosen) < n:
                chosen.append(best[task][i])
        i += 1
    rows: dict[str, dict] = {}
    for f in sorted({f for _, f in chosen}):
        ids = [i for i, g in chosen if g == f]
        rows.update({r["id"]: r for r in pl.read_parquet(f).filter(pl.col("id").is_in(ids)).to_dicts()})
    return [rows[i] for i, _ in chosen]


def decode_to(out: Path, n: int, to: Path, log=print) -> list[Path]:
    out, to = Path(out), Path(to)
    vocab = Vocab.load(out / "vocab.json")
    toks = load_tokenizers(out / "tokenizers", sorted(vocab.tokenizers))
    written = []
    for row in pick_sequences(out, n):
        folder = to / f"{row['task']}-{row['id']}"
        folder.mkdir(parents=True, exist_ok=True)
        written += decode_sequence(row, vocab, toks, folder)
        log(f"  {folder}: {', '.join(sorted(p.name for p in folder.iterdir()))}")
    return written


def decode_sequence(row: dict, vocab: Vocab, toks: dict, folder: Path) -> list[Path]:
    tokens = np.asarray(row["tokens"], dtype=np.int64)
    sides = json.loads(row["side"])
    meta = json.loads(row["meta"])
    written, span_files = [], {}
    media_spans = [(j, s, d) for j, (s, d) in enumerate(zip(row["spans"], sides)) if d.get("tokenizer") != TEXT]
    for k, (j, span, side) in enumerate(media_spans):
        name, modality = side["tokenizer"], span["modality"]
        ids = tokens[span["start"]:span["end"]]
        ids = ids[ids >= NUM_SPECIALS]  # drop frame/row separators (specials)
        local = vocab.to_local(name, ids)
        writer = modalities.get(modality).write_decoded
        if writer is None:
            continue
        value = toks[name].decode(local, side)
        path = writer(folder / f"{k}_{modality}", value, side, meta, toks[name])
        written.append(path)
        span_files[j] = path
    text_path = folder / "sequence.txt"
    text_path.write_text(render_sequence(tokens, vocab, toks[TEXT]) + "\n")
    written.append(text_path)
    if row.get("kind") == "interleaved":
        doc = folder / "document.md"
        doc.write_text(render_document(row, vocab, toks[TEXT], span_files))
        written.append(doc)
    return written


def render_document(row: dict, vocab: Vocab, text_tok, span_files: dict[int, Path]) -> str:
    """An interleaved sequence as Markdown: text spans decoded, media spans as links to their files."""
    tokens = np.asarray(row["tokens"], dtype=np.int64)
    sides = json.loads(row["side"])
    blocks = []
    for j, (span, side) in enumerate(zip(row["spans"], sides)):
        if side.get("tokenizer") == TEXT:
            blocks.append(text_tok.decode(vocab.to_local(TEXT, tokens[span["start"]:span["end"]]), {}))
        elif j in span_files:
            link = span_files[j].name
            picture = modalities.get(span["modality"]).picture
            blocks.append(f"![{span_files[j].stem}]({link})" if picture else f"[{link}]({link})")
    return "\n\n".join(blocks) + "\n"


def render_sequence(tokens: np.ndarray, vocab: Vocab, text_tok) -> str:
    """The sequence as a person reads it: specials by name, text decoded, media runs summarised."""
    names = {i: t for t, i in vocab.specials.items()}
    seps = {vocab.special(m.separator) for m in modalities.media() if m.separator and m.separator in vocab.specials}
    mods = vocab.modality_of(tokens)
    pieces, i = [], 0
    while i < len(tokens):
        j = i
        while j < len(tokens) and mods[i] != "special" and (mods[j] == mods[i] or int(tokens[j]) in seps):
            j += 1
        if mods[i] == "special":
            pieces.append(names.get(int(tokens[i]), f"<|special_{int(tokens[i])}|>"))
            i += 1
            continue
        if mods[i] == TEXT:
            pieces.append(text_tok.decode(vocab.to_local(TEXT, tokens[i:j]), {}))
        else:
            pieces.append(f"[{j - i} {mods[i]} tokens]")
        i = j
    return " ".join(pieces)
