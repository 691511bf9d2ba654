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

Each modality's module (`dataengine.modalities`) declares its kind's tasks, weights and templates; an
aligned modality adds tasks to its host kind (depth adds image_to_depth and depth_to_image to image),
drawn only by items that have it.

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

from dataengine import modalities
from dataengine.config import build
from dataengine.errors import RecipeError

def _kind_tasks() -> dict[str, tuple[str, ...]]:
    """Each row kind's tasks in draw order: its modality's, then those aligned modalities add to it."""
    out: dict[str, tuple[str, ...]] = {}
    for m in modalities.registry().values():
        added = tuple(t for o in modalities.registry().values() for t in o.host_tasks.get(m.name, {}))
        out[m.name] = tuple(m.tasks) + added
        out.update({k: (k,) for k in m.kinds})  # record kinds (chat, interleaved): one task, the kind itself
    return out


def _default_tasks() -> dict[str, dict[str, float]]:
    out: dict[str, dict[str, float]] = {}
    for m in modalities.registry().values():
        out[m.name] = {**m.default_tasks, **{t: w for o in modalities.registry().values()
                                             for t, w in o.host_tasks.get(m.name, {}).items()}}
        out.update({k: {k: 1.0} for k in m.kinds})
    return out


KIND_TASKS: dict[str, tuple[str, ...]] = _kind_tasks()
KINDS = tuple(KIND_TASKS)
SINGLE_TASK_KINDS = tuple(k for k, t in KIND_TASKS.items() if t == (k,))  # one task each: the kind itself
MEDIA_KINDS = tuple(k for k, t in KIND_TASKS.items() if "instruct" in t)  # kinds with instruction templates
# Understanding (X -> text) and generation (text -> X) in equal parts, so one corpus teaches both
# directions; a fifth as instructions (each modality's module gives its weights and the reason).
DEFAULT_TASKS: dict[str, dict[str, float]] = _default_tasks()
# Several phrasings per kind so the model learns the intent, not one string.
DEFAULT_TEMPLATES: dict[str, list[str]] = {m.name: list(m.templates) for m in modalities.registry().values()
                                           if m.templates}
_TEXT_NAMES = {m.paired_text for m in modalities.registry().values() if m.paired_text} | {modalities.TEXT}


def task_needs(kind: str, task: str) -> frozenset[str]:
    """What an item of `kind` must have for `task`: "text" (its caption, transcript or label) and/or the
    aligned modalities the task names (``image_to_depth`` needs "depth")."""
    if task == kind or kind in SINGLE_TASK_KINDS:
        return frozenset()
    if task == "instruct":
        return frozenset({"text"})
    names = set(task.split("_to_"))
    return frozenset(("text" if n in _TEXT_NAMES else n) for n in names if n != kind)


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


def choose_tasks(cfg: ComposeConfig, kind: str, ids: list[str], seed: int, has: list) -> list[str]:
    """The task of each id of one kind. `has[i]`: what item i has besides its kind, a set of "text" and
    aligned modality names (a bool means {"text"} or nothing: whether it has its caption/transcript/label).

    Each item draws among the tasks it can do (`task_needs`); an item that can do none with a positive
    weight gets the unconditional task (the kind itself). Text, chat and interleaved have one task each.
    """
    if kind not in KIND_TASKS:
        raise ValueError(f"unknown kind {kind!r}; expected one of {list(KINDS)}")
    if kind in SINGLE_TASK_KINDS:
        return [kind] * len(ids)
    names = list(KIND_TASKS[kind])
    w = np.array([float(cfg.weights(kind).get(t, 0.0)) for t in names])
    u = hash_uniform(seed, ids, "task")
    chosen = [kind] * len(ids)
    groups: dict[frozenset, list[int]] = {}
    for i, h in enumerate(has):
        h = ({"text"} if h else set()) if isinstance(h, (bool, np.bool_)) else h
        groups.setdefault(frozenset(h), []).append(i)
    for h, idx in groups.items():
        wm = w * np.array([task_needs(kind, t) <= h for t in names], dtype=np.float64)
        if wm.sum() <= 0:
            continue
        cum = np.cumsum(wm / wm.sum())
        # searchsorted(side="right") never lands on a zero-weight task: its cum equals its predecessor's
        pick = np.minimum(np.searchsorted(cum, u[idx], side="right"), len(names) - 1)
        while (wm[pick] == 0).any():  # float round-off at the top end only: step back to a positive weight
            pick = np.where(wm[pick] == 0, pick - 1, pick)
        for j, p in zip(idx, pick):
            chosen[j] = names[int(p)]
    return chosen


def choose_template(cfg: ComposeConfig, kind: str, item_id: str, seed: int) -> str:
    temps = cfg.templates_for(kind)
    return temps[int(hash_uniform(seed, [item_id], "template")[0] * len(temps))]


def task_label(kind: str, task: str) -> str:
    """The `task` column value: instruction tasks are qualified by their kind."""
    return f"{kind}_instruct" if task == "instruct" else task
