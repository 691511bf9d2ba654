"""Which sequence each sample group becomes: tasks, weights, instruction templates.

One task per sample group, drawn by a hash of ``(seed, id)`` against the
recipe's weights for the group's kind, so the same id always gets the same task
(a rerun, or a grown corpus, never reshuffles what an item became):

    kind    tasks (recipe key `compose.tasks.<kind>`)
    image   image_to_caption, caption_to_image, instruct, image (unconditional)
    audio   audio_to_transcript, transcript_to_audio, instruct, audio
    video   video_to_caption, caption_to_video, instruct, video  (video spans carry their audio)
    sensor  sensor_to_label, instruct, sensor
    text    text
    chat    chat
    interleaved  interleaved  (a `.jsonl` document of text and image/audio segments, in reading order)

A media item without a caption/transcript/label can only be unconditional
(`image`, `audio`, ...), whatever the weights say. Instruction tasks render as
a chat turn pair whose user turn is a template drawn (by another hash) from
`compose.templates.<kind>`; the `task` column then reads `<kind>_instruct`.
"""
from __future__ import annotations

import difflib
import hashlib
import math
from dataclasses import dataclass, field

import numpy as np

from dataengine.config import build
from dataengine.errors import RecipeError

MEDIA_KINDS = ("image", "audio", "video", "sensor")
KINDS = MEDIA_KINDS + ("text", "chat", "interleaved")
SINGLE_TASK_KINDS = ("text", "chat", "interleaved")  # one task each: the kind itself

KIND_TASKS: dict[str, tuple[str, ...]] = {
    "image": ("image_to_caption", "caption_to_image", "instruct", "image"),
    "audio": ("audio_to_transcript", "transcript_to_audio", "instruct", "audio"),
    "video": ("video_to_caption", "caption_to_video", "instruct", "video"),
    "sensor": ("sensor_to_label", "instruct", "sensor"),
    "text": ("text",),
    "chat": ("chat",),
    "interleaved": ("interleaved",),
}

# Understanding (X -> text) and generation (text -> X) in equal parts, so one corpus
# teaches both directions; a fifth as instructions, enough for the SFT stage to find
# its format without starving pretraining. Captioned items are never spent on the
# unconditional task by default (its weight is 0): uncaptioned items already feed it.
# Sensor has no generation task (a label does not determine a recording).
DEFAULT_TASKS: dict[str, dict[str, float]] = {
    "image": {"image_to_caption": 0.4, "caption_to_image": 0.4, "instruct": 0.2},
    "audio": {"audio_to_transcript": 0.4, "transcript_to_audio": 0.4, "instruct": 0.2},
    "video": {"video_to_caption": 0.4, "caption_to_video": 0.4, "instruct": 0.2},
    "sensor": {"sensor_to_label": 0.7, "instruct": 0.3},
    "text": {"text": 1.0},
    "chat": {"chat": 1.0},
    "interleaved": {"interleaved": 1.0},
}

# Several phrasings per kind so the model learns the intent, not one string.
DEFAULT_TEMPLATES: dict[str, list[str]] = {
    "image": ["Describe this image.", "What is shown in this picture?", "Write a caption for this image.",
              "Give a short description of the image."],
    "audio": ["Transcribe this audio.", "What is being said in this recording?",
              "Write down the words spoken in this clip."],
    "video": ["What happens in this video?", "Describe this video.", "Write a caption for this clip."],
    "sensor": ["Which activity is this recording?", "What is the person doing in this sensor recording?",
               "Label this sensor recording."],
}


@dataclass
class ComposeConfig:
    """The `compose:` section of a recipe.

    A kind missing from `tasks` or `templates` keeps its defaults; inside a kind,
    a task that is not listed has weight 0 (list exactly what you want).
    """

    tasks: dict[str, dict[str, float]] = field(default_factory=lambda: {k: dict(v) for k, v in DEFAULT_TASKS.items()})
    templates: dict[str, list[str]] = field(
        default_factory=lambda: {k: list(v) for k, v in DEFAULT_TEMPLATES.items()})
    # Pack short sequences into rows of this many tokens (0: off). Packing saves padding
    # when most sequences are far shorter than the trainer's context (captions, labels).
    pack_length: int = 0

    @classmethod
    def from_dict(cls, data: dict | None) -> "ComposeConfig":
        return build(cls, data, "compose")

    def weights(self, kind: str) -> dict[str, float]:
        return dict(self.tasks[kind]) if kind in self.tasks else dict(DEFAULT_TASKS[kind])

    def templates_for(self, kind: str) -> list[str]:
        return list(self.templates[kind]) if kind in self.templates else list(DEFAULT_TEMPLATES[kind])

    def validate(self, where: str = "compose") -> "ComposeConfig":
        if not isinstance(self.tasks, dict):
            raise RecipeError(f"{where}.tasks: expected a mapping kind -> {{task: weight}}, got {self.tasks!r}")
        for kind, weights in self.tasks.items():
            if kind not in KIND_TASKS:
                _unknown(f"{where}.tasks", kind, list(KINDS), what="kind")
            if not isinstance(weights, dict):
                raise RecipeError(f"{where}.tasks.{kind}: expected a mapping task -> weight, got {weights!r}; "
                                  f"e.g. {DEFAULT_TASKS[kind]}")
            for task, w in weights.items():
                if task not in KIND_TASKS[kind]:
                    _unknown(f"{where}.tasks.{kind}", task, list(KIND_TASKS[kind]), what="task")
                if isinstance(w, bool) or not isinstance(w, (int, float)) or not math.isfinite(w) or w < 0:
                    raise RecipeError(f"{where}.tasks.{kind}.{task}: expected a finite weight >= 0, got {w!r}")
            if sum(float(weights.get(t, 0.0)) for t in KIND_TASKS[kind]) <= 0:
                raise RecipeError(f"{where}.tasks.{kind}: every weight is 0; give at least one of "
                                  f"{list(KIND_TASKS[kind])} a positive weight, or leave `{kind}` out "
                                  f"to keep the defaults {DEFAULT_TASKS[kind]}")
        if not isinstance(self.templates, dict):
            raise RecipeError(f"{where}.templates: expected a mapping kind -> [template, ...]")
        for kind, temps in self.templates.items():
            if kind not in MEDIA_KINDS:
                _unknown(f"{where}.templates", kind, list(MEDIA_KINDS), what="kind")
            if (not isinstance(temps, list) or not temps
                    or not all(isinstance(t, str) and t.strip() for t in temps)):
                raise RecipeError(f"{where}.templates.{kind}: expected a non-empty list of non-empty strings, "
                                  f"e.g. {DEFAULT_TEMPLATES[kind][:2]}; got {temps!r}")
        if isinstance(self.pack_length, bool) or not isinstance(self.pack_length, int) or self.pack_length < 0:
            raise RecipeError(f"{where}.pack_length: expected an integer >= 0 (0 turns packing off), "
                              f"got {self.pack_length!r}")
        return self


def _unknown(where: str, key: str, allowed: list[str], what: str = "key") -> None:
    close = difflib.get_close_matches(str(key), allowed, n=1)
    hint = f"; did you mean {close[0]!r}?" if close else ""
    raise RecipeError(f"{where}: unknown {what} {key!r}{hint} Allowed: {allowed}")


# ---- deterministic draws ------------------------------------------------------------
def hash_uniform(seed: int, ids: list[str], salt: str) -> np.ndarray:
    """A uniform draw in [0, 1) per id from sha256(seed, salt, id): stable, order-free, float64 [N]."""
    # one digest per id (the ids are strings; there is nothing to vectorise below the hash)
    words = [int.from_bytes(hashlib.sha256(f"{seed}\x1f{salt}\x1f{i}".encode()).digest()[:8], "big") >> 11
             for i in ids]
    return np.asarray(words, dtype=np.float64) / float(1 << 53)


def choose_tasks(cfg: ComposeConfig, kind: str, ids: list[str], seed: int, paired: np.ndarray | list[bool]
                 ) -> list[str]:
    """The task of each id of one kind; `paired[i]` says whether item i has its caption/transcript/label.

    Unpaired media items get the unconditional task (the kind itself); text, chat and
    interleaved have a single task each.
    """
    if kind not in KIND_TASKS:
        raise ValueError(f"unknown kind {kind!r}; expected one of {list(KINDS)}")
    if kind in SINGLE_TASK_KINDS:
        return [kind] * len(ids)
    names = list(KIND_TASKS[kind])
    w = np.array([float(cfg.weights(kind).get(t, 0.0)) for t in names])
    cum = np.cumsum(w / w.sum())
    u = hash_uniform(seed, ids, "task")
    # searchsorted(side="right") never lands on a zero-weight task: its cum equals its predecessor's
    pick = np.minimum(np.searchsorted(cum, u, side="right"), len(names) - 1)
    while (w[pick] == 0).any():  # float round-off at the top end only: step back to a positive weight
        pick = np.where(w[pick] == 0, pick - 1, pick)
    chosen = np.asarray(names, dtype=object)[pick]
    chosen = np.where(np.asarray(paired, dtype=bool), chosen, kind)
    return chosen.tolist()


def choose_template(cfg: ComposeConfig, kind: str, item_id: str, seed: int) -> str:
    temps = cfg.templates_for(kind)
    return temps[int(hash_uniform(seed, [item_id], "template")[0] * len(temps))]


def task_label(kind: str, task: str) -> str:
    """The `task` column value: instruction tasks are qualified by their kind."""
    return f"{kind}_instruct" if task == "instruct" else task
