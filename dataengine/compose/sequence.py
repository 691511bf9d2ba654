"""Sequence layouts: every span wrapped in markers, every position's loss recorded.

Every modality span is wrapped in its begin/end markers; the codes inside carry
their own structure markers (``<|frame_sep|>`` between video frames,
``<|row_sep|>`` between sensor time steps), so a span decodes without outside
help apart from the side information kept in the row (grid, scale). `spans` and
`side` are parallel lists: entry k of `side` describes span k.

    image_to_caption  <|bos|> <|image_start|> codes <|image_end|> <|text_start|> caption <|text_end|> <|eos|>
    caption_to_image  <|bos|> <|text_start|> caption <|text_end|> <|image_start|> codes <|image_end|> <|eos|>
    audio_to_transcript / transcript_to_audio   the same with <|audio_start|> .. <|audio_end|>
    video_to_caption  <|bos|> <|video_start|> f0 <|frame_sep|> f1 ... <|video_end|> [<|audio_start|> .. <|audio_end|>]
                      <|text_start|> caption <|text_end|> <|eos|>      (caption_to_video: caption first)
    sensor_to_label   <|bos|> <|sensor_start|> row0 <|row_sep|> row1 ... <|sensor_end|> <|text_start|> label <|text_end|> <|eos|>
    image (etc.)      <|bos|> <|image_start|> codes <|image_end|> <|eos|>    (no caption: unconditional)
    text              <|bos|> <|text_start|> text <|text_end|> <|eos|>
    chat              <|bos|> (<|system|>|<|user|>|<|assistant|>) content <|end_turn|> ... <|eos|>
    interleaved       <|bos|> <|text_start|> t0 <|text_end|> <|image_start|> codes <|image_end|>
                      <|text_start|> t1 <|text_end|> ... <|eos|>   (segments in document order)

Pretraining sequences carry loss on every position; chat and instruction
sequences (`compose.instruct`) only on assistant turns (their content, end
marker, and the final eos).
"""
from __future__ import annotations

import numpy as np

from dataengine import modalities
from dataengine.vocab import Vocab

ROLE_TOKENS = {"system": "<|system|>", "user": "<|user|>", "assistant": "<|assistant|>"}
TEXT = modalities.TEXT
MARKERS = {m.name: m.markers for m in modalities.registry().values()}  # modality -> (begin, end) specials


class SequenceBuilder:
    """Appends specials and modality spans, tracking spans and loss targets."""

    def __init__(self, vocab: Vocab):
        self.vocab = vocab
        self.parts: list[np.ndarray] = []
        self.length = 0
        self.spans: list[dict] = []
        self.targets: list[dict] = []
        self.side: list[dict] = []

    def special(self, *tokens: str) -> "SequenceBuilder":
        self._append(np.array([self.vocab.special(t) for t in tokens], dtype=np.int32))
        return self

    def span(self, modality: str, name: str, local: np.ndarray, side: dict | None = None,
             rows: int | None = None, sep: str | None = None) -> "SequenceBuilder":
        """Wrap `local` codes of tokenizer `name` in the modality's markers.

        With `rows` and `sep`, the codes are split into `rows` equal rows and
        `sep` is inserted between consecutive rows (frames, time steps).
        """
        ids = self.vocab.to_global(name, local)
        if rows is not None and sep is not None and rows > 1:
            ids = _interleave(ids, rows, self.vocab.special(sep))
        begin, end = MARKERS[modality]
        self.special(begin)
        start = self.length
        self._append(ids)
        self.spans.append({"modality": modality, "start": start, "end": self.length})
        self.side.append({"modality": modality, "tokenizer": name, **(side or {})})
        self.special(end)
        return self

    def text(self, text_ids: np.ndarray) -> "SequenceBuilder":
        """Raw text content (a chat turn): no markers, but a span and its side entry."""
        start = self.length
        self._append(self.vocab.to_global(TEXT, text_ids))
        self.spans.append({"modality": TEXT, "start": start, "end": self.length})
        self.side.append({"modality": TEXT, "tokenizer": TEXT})
        return self

    def media(self, parts: list[tuple[str, str, np.ndarray, dict]]) -> "SequenceBuilder":
        """Media spans (modality, tokenizer, local codes, side); a modality with rows (video frames, sensor
        time steps) gets its separator between them."""
        for modality, name, local, side in parts:
            m = modalities.get(modality)
            if m.rows is not None:
                self.span(modality, name, local, side, rows=m.rows(side, local), sep=m.separator)
            else:
                self.span(modality, name, local, side)
        return self

    def target(self, start: int, end: int) -> None:
        if end > start:
            self.targets.append({"start": start, "end": end})

    def _append(self, ids: np.ndarray) -> None:
        self.parts.append(ids.astype(np.int32, copy=False))
        self.length += len(ids)

    def tokens(self) -> np.ndarray:
        return np.concatenate(self.parts) if self.parts else np.zeros(0, np.int32)


def _interleave(ids: np.ndarray, rows: int, sep: int) -> np.ndarray:
    if len(ids) % rows:
        raise ValueError(f"{len(ids)} codes do not split into {rows} equal rows")
    grid = ids.reshape(rows, -1)                                   # [rows, per_row]
    seps = np.full((rows, 1), sep, dtype=ids.dtype)
    return np.concatenate([grid, seps], axis=1).reshape(-1)[:-1]   # drop the trailing separator


def split_rows(ids: np.ndarray, sep: int) -> list[np.ndarray]:
    """Inverse of the row interleave: codes of each row, separators removed."""
    return [row[row != sep] for row in np.split(ids, np.flatnonzero(ids == sep))]


def compose_pair(vocab: Vocab, first: list[tuple[str, str, np.ndarray, dict]],
                 second: list[tuple[str, str, np.ndarray, dict]]) -> SequenceBuilder:
    """A pretraining sequence: `first`'s spans then `second`'s (modality, tokenizer, local codes, side),
    loss on every position. ``("text", "text", ids, {})`` is a text span."""
    b = SequenceBuilder(vocab).special("<|bos|>")
    b.media(first)
    b.media(second)
    b.special("<|eos|>")
    b.target(0, b.length)
    return b


def compose_interleaved(vocab: Vocab, parts: list[tuple[str, str, np.ndarray, dict]]) -> SequenceBuilder:
    """An interleaved document: its segments in order, each wrapped in its modality's markers.

    `parts` are (modality, tokenizer, local codes, side) as for `SequenceBuilder.media`,
    with ("text", "text", text ids, {}) for a text segment. Span k (and side k) is
    segment k. A pretraining sequence: loss on every position, like plain text.
    """
    if not parts:
        raise ValueError("an interleaved document needs at least one segment")
    b = SequenceBuilder(vocab).special("<|bos|>")
    b.media(parts)
    b.special("<|eos|>")
    b.target(0, b.length)
    return b


def compose_chat(vocab: Vocab, turns: list[tuple[str, np.ndarray]]) -> SequenceBuilder:
    """Chat: role marker, content span, end_turn; loss on assistant content + end_turn (+ final eos)."""
    b = SequenceBuilder(vocab).special("<|bos|>")
    for i, (role, text_ids) in enumerate(turns):
        if role not in ROLE_TOKENS:
            raise ValueError(f"chat role {role!r} is not one of {sorted(ROLE_TOKENS)}")
        b.special(ROLE_TOKENS[role])
        start = b.length
        b.text(text_ids)
        b.special("<|end_turn|>")
        if role == "assistant":
            if i == len(turns) - 1:
                b.special("<|eos|>")
            b.target(start, b.length)
    if not turns or turns[-1][0] != "assistant":
        b.special("<|eos|>")
    return b
