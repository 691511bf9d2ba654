"""`dataengine generate`: sample a continuation from a checkpoint and decode it back to media.

The prompt is built with the same sequence builder as the shards, so it looks
like training data:

    --prompt-text T                 <|bos|> <|text_start|> T                      (text continuation)
    --prompt-file F [--prompt-text] <|bos|> <media of F> <|text_start|> [T]      (caption / transcript / label)
    --chat                          <|bos|> <|user|> T [<media of F>] <|end_turn|> <|assistant|>   (instructions)
    --then MODALITY                 closes the text and opens a MODALITY span (caption -> image, ...)

The whole sequence (prompt + continuation) is written with the decoders of
`dataengine inspect`: `sequence.txt` plus one PNG/GIF/WAV/CSV per media span.
A generated media span is fitted to what its tokenizer can decode (ids outside
its range dropped, the code count cut to whole rows/frames, side information
borrowed from a training row of that modality).
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import torch

from dataengine.compose.sequence import MARKERS, SequenceBuilder
from dataengine.errors import RecipeError
from dataengine.train import checkpoint as ck
from dataengine.train.config import from_dict
from dataengine.train.model import Transformer
from dataengine.vocab import Vocab

MEDIA_EXT = {".png": "image", ".jpg": "image", ".jpeg": "image", ".webp": "image", ".bmp": "image",
             ".gif": "image", ".wav": "audio", ".flac": "audio", ".mp3": "audio", ".ogg": "audio",
             ".csv": "sensor", ".npy": "sensor", ".parquet": "sensor"}


def load_model(ckpt: Path, device: str = "cpu") -> tuple[Transformer, dict]:
    ckpt = ck.resolve(Path(ckpt))
    state = ck.read_state(ckpt)
    cfg = from_dict(state["config"], str(ckpt / "state.json"))
    model = Transformer(cfg.model)
    ck.load_weights(ckpt, model)
    return model.to(device).eval(), state


def encode_media(path: Path, toks: dict, recipe_decode: dict | None = None) -> tuple[str, np.ndarray, dict]:
    """(modality, local codes, side) of one media file, decoded as `dataengine run` would."""
    ext = path.suffix.lower()
    modality = MEDIA_EXT.get(ext)
    if modality is None or modality not in toks:
        raise RecipeError(f"--prompt-file {path}: cannot prompt with {ext or 'this file'}; use an image "
                          f"(.png/.jpg), audio (.wav/.flac) or sensor (.csv/.npy) file")
    data = path.read_bytes()
    if modality == "image":
        from dataengine.decode.image import decode_image
        value = decode_image(data)
    elif modality == "audio":
        from dataengine.decode.audio import decode_audio
        value, _ = decode_audio(data, sample_rate=int(toks["audio"].params.get("sample_rate", 16000)), max_seconds=30.0)
    else:
        from dataengine.decode.sensor import decode_sensor, parse_sidecar
        sidecar_path = path.with_suffix(".json")
        sidecar = parse_sidecar(sidecar_path.read_bytes()) if sidecar_path.is_file() else None
        rec = decode_sensor(data, ext, sidecar, rate_hz=10.0, max_rows=4096)
        value = rec.values if hasattr(rec, "values") else rec
    with torch.inference_mode():
        codes, side = toks[modality].encode(value)
    return modality, np.asarray(codes), side


def build_prompt(vocab: Vocab, toks: dict, *, text: str | None, media: Path | None, chat: bool,
                 then: str | None) -> np.ndarray:
    text_ids = np.asarray(toks["text"].encode(text)[0]) if text else np.zeros(0, np.int32)
    parts = []
    if media is not None:
        modality, codes, side = encode_media(Path(media), toks)
        parts.append((modality, modality, codes, side))
    b = SequenceBuilder(vocab).special("<|bos|>")
    if chat:
        b.special("<|user|>")
        b.text(text_ids)
        b.media(parts)
        b.special("<|end_turn|>", "<|assistant|>")
    else:
        b.media(parts)
        b.special("<|text_start|>")
        if len(text_ids):
            b._append(vocab.to_global("text", text_ids))
    if then:
        if then not in MARKERS or then == "text":
            raise RecipeError(f"--then {then}: choose one of {sorted(m for m in MARKERS if m != 'text')}")
        if not chat:
            b.special("<|text_end|>")
        b.special(MARKERS[then][0])
    return b.tokens().astype(np.int64)


def template_sides(shards: Path, names: set[str]) -> dict[str, dict]:
    """A side dict per tokenizer, from the first training row that has one (what a generated span lacks)."""
    found: dict[str, dict] = {}
    for f in sorted((Path(shards) / "parquet").glob("*.parquet")):
        for side in pq.read_table(f, columns=["side"]).column("side").to_pylist():
            for s in json.loads(side or "[]"):
                if s.get("tokenizer") in names and s["tokenizer"] not in found:
                    found[s["tokenizer"]] = s
        if found.keys() >= names:
            break
    return found


def _fit_span(modality: str, ids: np.ndarray, side: dict, tok) -> tuple[np.ndarray, dict] | None:
    """Cut generated ids to a decodable span; None when nothing decodable is left."""
    side = dict(side)
    if modality == "image":
        h, w = (int(g) for g in side.get("grid", getattr(tok, "grid", (8, 8))))
        if len(ids) == 0:
            return None
        ids = np.resize(ids, h * w) if len(ids) < h * w else ids[:h * w]  # repeat to fill a short image
    elif modality == "video":
        h, w = (int(g) for g in side.get("grid", getattr(tok, "grid", (8, 8))))
        t = len(ids) // (h * w)
        if t == 0:
            return None
        ids = ids[:t * h * w]
        side.update(latent_frames=t)
        side.pop("frames", None)
    elif modality == "sensor":
        c = int(side.get("channels", 1))
        ids = ids[: len(ids) // c * c]
        side.setdefault("scale", [1.0] * c)
    elif modality == "audio":
        for key in ("mel_frames", "samples", "frames", "duration_s"):
            side.pop(key, None)
    return (ids, side) if len(ids) else None


def split_spans(tokens: np.ndarray, vocab: Vocab, toks: dict, templates: dict) -> dict:
    """A row dict (tokens, spans, side, meta) for `inspect.decode_sequence` from a generated sequence."""
    out_tokens: list[int] = []
    spans, sides = [], []
    starts = {vocab.special(b): m for m, (b, _) in MARKERS.items() if b in vocab.specials}
    ends = {vocab.special(e) for _, e in MARKERS.values() if e in vocab.specials}
    i, n = 0, len(tokens)
    while i < n:
        t = int(tokens[i])
        out_tokens.append(t)
        i += 1
        modality = starts.get(t)
        if modality is None or modality == "text":
            continue
        j = i
        while j < n and int(tokens[j]) not in ends:
            j += 1
        raw = tokens[i:j]
        name = modality
        lo, hi = vocab.tokenizer_range(name) if name in vocab.tokenizers else (0, 0)
        codes = raw[(raw >= lo) & (raw < hi)]
        fitted = _fit_span(modality, codes, templates.get(name, {"tokenizer": name}), toks.get(name)) if hi else None
        body = raw if fitted is None else fitted[0]
        if fitted is not None:
            spans.append({"modality": modality, "start": len(out_tokens), "end": len(out_tokens) + len(body)})
            sides.append(dict(fitted[1], modality=modality, tokenizer=name))
        out_tokens.extend(int(x) for x in body)
        i = j
    return {"tokens": out_tokens, "spans": spans, "side": json.dumps(sides), "meta": "{}"}


def generate(checkpoint: Path, to: Path, *, prompt_text: str | None = None, prompt_file: Path | None = None,
             chat: bool = False, then: str | None = None, shards: Path | None = None, max_new: int = 256,
             temperature: float = 0.8, top_k: int | None = 50, seed: int = 0, log=print) -> dict:
    from dataengine.inspect import decode_sequence, render_sequence
    from dataengine.pipeline.tokenize_stage import load_tokenizers

    if not prompt_text and prompt_file is None and not then:
        raise RecipeError("give a prompt: --prompt-text TEXT and/or --prompt-file MEDIA (or --then MODALITY)")
    model, state = load_model(checkpoint)
    shards = Path(shards or state["shards"])
    vocab = Vocab.load(shards / "vocab.json")
    if vocab.sha256 != state["vocab_sha256"]:
        raise RecipeError(f"{shards}/vocab.json is not the vocabulary the checkpoint was trained on; "
                          "pass --shards the output folder it was trained on")
    toks = load_tokenizers(shards / "tokenizers", sorted(vocab.tokenizers))
    prompt = build_prompt(vocab, toks, text=prompt_text, media=prompt_file, chat=chat, then=then)
    g = torch.Generator().manual_seed(seed)
    stop = {vocab.special("<|eos|>")} | ({vocab.special("<|end_turn|>")} if chat else set())
    with torch.no_grad():
        seq = model.generate(torch.from_numpy(prompt), max_new, temperature=temperature, top_k=top_k, stop=stop,
                             generator=g).numpy()
    names = {m for m in vocab.tokenizers if m != "text"}
    row = split_spans(seq, vocab, toks, template_sides(shards, names))
    to = Path(to)
    to.mkdir(parents=True, exist_ok=True)
    written = decode_sequence(row, vocab, toks, to)
    continuation = render_sequence(seq[len(prompt):], vocab, toks["text"])
    (to / "continuation.txt").write_text(continuation + "\n")
    (to / "generation.json").write_text(json.dumps(
        {"checkpoint": str(ck.resolve(Path(checkpoint))), "prompt_text": prompt_text,
         "prompt_file": str(prompt_file) if prompt_file else None, "chat": chat, "then": then, "seed": seed,
         "temperature": temperature, "top_k": top_k, "prompt_tokens": int(len(prompt)),
         "new_tokens": int(len(seq) - len(prompt)), "tokens": [int(t) for t in seq]}, indent=1) + "\n")
    log(f"prompt {len(prompt)} tokens, generated {len(seq) - len(prompt)}: {continuation[:300]}")
    log(f"written to {to}: {', '.join(sorted(p.name for p in to.iterdir()))}")
    return {"tokens": seq, "prompt_len": len(prompt), "files": written, "continuation": continuation}
