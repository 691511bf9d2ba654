"""Text: the backbone modality. Documents (`.txt`, `.md`), and the record kinds of `.jsonl` files:
chat conversations and interleaved documents (text segments with image/audio segments between)."""
from __future__ import annotations

from dataclasses import dataclass

import pyarrow as pa

from dataengine.curate.stats_text import text_stats
from dataengine.decode.text import TEXT_EXTS, decode_text
from dataengine.errors import RecipeError
from dataengine.modalities.spec import DecodeContext, Decoded, Modality

F, S = pa.float64(), pa.string()


@dataclass
class TextDecode:
    max_chars: int = 200_000
    max_record_bytes: int = 1_000_000
    max_interleaved_media: int = 16  # image/audio segments per interleaved .jsonl record (more: a reject)


def decode(data: bytes, path: str, sidecar: dict | None, meta: dict, ctx: DecodeContext) -> Decoded:
    meta["text"] = decode_text(data, max_chars=ctx.config.text.max_chars)
    return Decoded({}, {}, {"text": meta["text"]}, text=meta["text"])


def stats(full: dict, smeta: dict) -> dict:
    """Gopher-style stats of a document, or of a chat's message contents joined by newlines."""
    if "messages" in smeta:
        return text_stats("\n".join(m["content"] for m in smeta["messages"]))
    return text_stats(smeta["text"])


def fit_texts(meta: dict) -> list[str]:
    """Every text of a decoded row the text tokenizer will encode: its text, a record's text, chat turns."""
    out = [meta["text"]] if meta.get("text") else []
    record = meta.get("record") or {}
    if record.get("text"):
        out.append(record["text"])
    out.extend(m["content"] for m in record.get("messages", []))
    return out


def check_recipe(r, where: str) -> None:
    if r.decode.text.max_interleaved_media < 0:
        raise RecipeError(f"{where}.decode.text.max_interleaved_media: expected an integer >= 0 "
                          f"(0 refuses every image/audio segment), got {r.decode.text.max_interleaved_media}")


SPEC = Modality(
    name="text", extensions=tuple(sorted(TEXT_EXTS)), kinds=("chat", "interleaved"),
    markers=("<|text_start|>", "<|text_end|>"), in_vocab_v1=True,
    tasks=("text",), default_tasks={"text": 1.0},
    # 5-grams of BPE tokens: the usual word-ish shingle; 0.7 the customary text near-dup level
    ngram=5, threshold=0.7,
    stat_fields={
        # kinds text and chat; Gopher rules, Rae et al. 2021; words = whitespace tokens
        "text_chars": F,             # length, Unicode characters
        "text_words": F,             # whitespace-separated words, count
        "text_mean_word_len": F,     # mean characters per word
        "text_symbol_ratio": F,      # max(# count, ellipsis count) per word
        "text_non_alpha_ratio": F,   # fraction of words with no alphabetic character
        "text_dup_line_ratio": F,    # fraction of non-empty lines repeating an earlier line
        "text_dup_line_char_ratio": F,  # fraction of line characters in those repeated lines
        "text_top_2gram_ratio": F,   # fraction of word characters covered by the most frequent 2-gram
        "text_top_3gram_ratio": F,   # same, 3-gram
        "text_top_4gram_ratio": F,   # same, 4-gram
        "text_dup_ngram_ratio": F,   # fraction of word characters covered by repeated 5-grams
        "text_dup_10gram_ratio": F,  # same, 10-grams
        "text_lang": S,              # ISO 639 language code guessed by py3langid
        "text_lang_score": F,        # its probability, 0..1
    },
    decode_config=TextDecode, decode=decode, stats=stats, check_recipe=check_recipe,
    eval_keys=("bytes_per_token", "baseline_bytes_per_token"), color="#4c78a8",
)
