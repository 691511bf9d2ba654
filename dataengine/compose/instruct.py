"""Instruction sequences composed from paired data, and the per-task dispatcher.

An instruction renders as a one-exchange chat whose user turn is a template
("Describe this image.") followed by the media, and whose assistant turn is the
item's own caption, transcript or label:

    <|bos|> <|user|> template [<|image_start|> codes <|image_end|>] <|end_turn|>
            <|assistant|> caption <|end_turn|> <|eos|>

Loss falls on the assistant content, its <|end_turn|> and the final <|eos|>
only, exactly as for chat `.jsonl` (`sequence.compose_chat`), so the trainer's
SFT stage treats both the same way.
"""
from __future__ import annotations

import numpy as np

from dataengine.compose.sequence import SequenceBuilder, compose_media
from dataengine.compose.tasks import KIND_TASKS, task_label
from dataengine.vocab import Vocab


def compose_instruct(vocab: Vocab, prompt_ids: np.ndarray, parts: list[tuple[str, str, np.ndarray, dict]],
                     answer_ids: np.ndarray) -> SequenceBuilder:
    """User turn = prompt text + media spans; assistant turn = answer text (the only targets)."""
    b = SequenceBuilder(vocab).special("<|bos|>", "<|user|>")
    b.text(prompt_ids)
    b.media(parts)
    b.special("<|end_turn|>", "<|assistant|>")
    start = b.length
    b.text(answer_ids)
    b.special("<|end_turn|>", "<|eos|>")
    b.target(start, b.length)
    return b


def compose_task(vocab: Vocab, kind: str, task: str, parts: list[tuple[str, str, np.ndarray, dict]],
                 text_ids: np.ndarray | None, prompt_ids: np.ndarray | None = None) -> tuple[SequenceBuilder, str]:
    """Build the sequence of one item for `task` (a key of `tasks.KIND_TASKS[kind]`).

    `text_ids` is the item's caption/transcript/label (or the document, for text);
    `prompt_ids` the encoded template, for `instruct`. Returns the builder and the
    `task` column value. A paired task asked of an item without text is refused.
    """
    if kind == "chat":
        raise ValueError("chat records are multi-turn: build them with sequence.compose_chat")
    if kind == "interleaved":
        raise ValueError("interleaved documents hold many segments: build them with sequence.compose_interleaved")
    if task not in KIND_TASKS.get(kind, ()):
        raise ValueError(f"task {task!r} is not a {kind} task; expected one of {list(KIND_TASKS.get(kind, ()))}")
    has_text = text_ids is not None and len(text_ids) > 0
    if task != kind and not has_text:
        raise ValueError(f"task {task!r} needs the item's text, and this {kind} item has none")
    if task == "instruct":
        if prompt_ids is None:
            raise ValueError("an instruct task needs the encoded template (prompt_ids)")
        return compose_instruct(vocab, prompt_ids, parts, text_ids), task_label(kind, task)
    if kind == "text":
        return compose_media(vocab, "text", [], text_ids)
    if task == kind:  # unconditional: the media alone, even when a caption exists
        return compose_media(vocab, kind, parts, None)
    b, label = compose_media(vocab, kind, parts, text_ids, text_first=task.endswith(f"_to_{kind}"))
    assert label == task, (label, task)
    return b, label

