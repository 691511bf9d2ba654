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

from dataengine.compose.sequence import SequenceBuilder, compose_pair
from dataengine.compose.tasks import KIND_TASKS, SINGLE_TASK_KINDS, task_label, task_needs
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
                 text_ids: np.ndarray | None, prompt_ids: np.ndarray | None = None,
                 aligned: dict[str, list[tuple[str, str, np.ndarray, dict]]] | None = None
                 ) -> tuple[SequenceBuilder, str]:
    """Build the sequence of one item for `task` (a key of `tasks.KIND_TASKS[kind]`).

    `parts` are the item's own spans (a video's carry its soundtrack); `aligned` the spans of its aligned
    modalities (an image's depth map), by modality; `text_ids` its caption/transcript/label (or the
    document, for text); `prompt_ids` the encoded template, for `instruct`. ``A_to_B`` puts A's spans
    before B's. Returns the builder and the `task` column value. A task whose inputs the item lacks is
    refused.
    """
    if kind == "chat":
        raise ValueError("chat records are multi-turn: build them with sequence.compose_chat")
    if kind == "interleaved":
        raise ValueError("interleaved documents hold many segments: build them with sequence.compose_interleaved")
    if task not in KIND_TASKS.get(kind, ()):
        raise ValueError(f"task {task!r} is not a {kind} task; expected one of {list(KIND_TASKS.get(kind, ()))}")
    aligned = aligned or {}
    has_text = text_ids is not None and len(text_ids) > 0
    missing = sorted(n for n in task_needs(kind, task) if not (has_text if n == "text" else aligned.get(n)))
    if missing:
        raise ValueError(f"task {task!r} needs the item's {' and '.join(missing)}, and this {kind} item has none")
    text_part = [("text", "text", text_ids, {})] if has_text else []
    if task == "instruct":
        if prompt_ids is None:
            raise ValueError("an instruct task needs the encoded template (prompt_ids)")
        return compose_instruct(vocab, prompt_ids, parts, text_ids), task_label(kind, task)
    if task == kind:  # unconditional: the media alone (or the document), even when a caption exists
        return compose_pair(vocab, text_part if kind in SINGLE_TASK_KINDS else parts, []), task

    def spans(name: str) -> list:
        return parts if name == kind else aligned[name] if name in aligned else text_part

    first, second = task.split("_to_")
    return compose_pair(vocab, spans(first), spans(second)), task
