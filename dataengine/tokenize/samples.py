"""Fitting samples: which sample groups fit a tokenizer and which are held out, and their decoded items.

Held out by a seeded hash of each group's id (stable as the corpus grows), stratified by modality
(`split_units`); a fitting sample is a seeded pick per kind, decoded with the pipeline's own decode
stage and routed to the roles (`collect_samples`). `tokenize.fit` fits on it; `evaluate.run`
measures on the held-out groups.
"""
from __future__ import annotations

import hashlib
import json
import time

from safetensors.numpy import load as st_load

from dataengine import modalities
from dataengine.modalities.text import fit_texts
from dataengine.progress import progress
from dataengine.recipe import Recipe
from dataengine.tokenize.base import resolve_params
from dataengine.tokenize.registry import get_family

def fit_order() -> tuple[str, ...]:
    """Roles in fitting order: registry order, each after the tokenizers it is built on (video after image)."""
    order: list[str] = []

    def visit(name: str) -> None:
        if name not in order:
            for n in modalities.get(name).needs:
                visit(n)
            order.append(name)

    for name in modalities.names():
        visit(name)
    return tuple(order)


def input_sizes(recipe: Recipe) -> dict[str, int]:
    """The input side of every tokenizer of the recipe that has one (`Modality.size_param`): {"image": 64}."""
    out = {}
    for role, spec in recipe.tokenizers.items():
        param = modalities.get(role).size_param
        if param:
            out[role] = int(resolve_params(spec.family, get_family(spec.family).defaults, spec.params)[param])
    return out


def resolved_params(recipe: Recipe, role: str) -> dict:
    spec = recipe.tokenizers[role]
    return resolve_params(spec.family, get_family(spec.family).defaults, spec.params)


def _rank(seed: int, unit_id: str) -> str:
    return hashlib.sha256(f"{seed}:{unit_id}".encode()).hexdigest()


def holdout_score(seed: int, unit_id: str) -> float:
    """A seeded hash of a sample group's id, uniform in [0, 1): below the fraction means held out."""
    h = hashlib.sha256(f"holdout:{seed}:{unit_id}".encode()).hexdigest()
    return int(h[:8], 16) / 0x1_0000_0000


def is_heldout(seed: int, unit_id: str, fraction: float) -> bool:
    """Held out of fitting by the hash alone (stable as the corpus grows); see `split_units`."""
    return holdout_score(seed, unit_id) < fraction


def split_units(recipe: Recipe, units: list) -> tuple[list, list]:
    """(units to fit on, held-out units) by `fit.holdout_fraction`, stratified by modality.

    A unit is held out when its seeded hash is below the fraction. A modality
    (``unit.kind``) with at least 2 sample groups that the hash leaves with no
    held-out group gets one anyway: its group of lowest hash (still seeded and
    deterministic), so every modality the corpus holds twice has an eval item.
    A fraction of 0 holds out nothing.
    """
    frac, seed = recipe.fit.holdout_fraction, recipe.seed
    scores = {u.unit_id: holdout_score(seed, u.unit_id) for u in units}
    held_ids = {i for i, s in scores.items() if s < frac}
    if frac > 0:
        by_kind: dict[str, list] = {}
        for u in units:
            by_kind.setdefault(u.kind, []).append(u)
        for group in by_kind.values():
            if len(group) >= 2 and not any(u.unit_id in held_ids for u in group):
                held_ids.add(min(group, key=lambda u: (scores[u.unit_id], u.unit_id)).unit_id)
    fit = [u for u in units if u.unit_id not in held_ids]
    held = [u for u in units if u.unit_id in held_ids]
    return fit, held


def collect_samples(recipe: Recipe, units: list, stage, log=print) -> dict[str, list]:
    """Decode a seeded sample of units per kind; route arrays and text to each role.

    Returns {role: [decoded item, ...]}: uint8 images [S,S,3] (video frames
    included), uint8 videos [T,S,S,3], float32 mono waves, float32 sensor
    arrays [T,C], and strings for text.
    """
    cap = recipe.fit.max_items
    by_kind: dict[str, list] = {}
    for u in sorted(units, key=lambda u: _rank(recipe.seed, u.unit_id)):
        by_kind.setdefault(u.kind, []).append(u)
    samples: dict[str, list] = {role: [] for role in fit_order()}
    t0 = time.time()
    picked = [u for _, group in sorted(by_kind.items()) for u in group[:cap]]
    for u in progress(picked, "decode fitting sample", unit="group"):
        for row in stage.decode_unit(u.to_row()):
            if row["status"] != "ok":
                continue
            _route(row, samples)
    for role in samples:  # keep each role's sample bounded (video frames, captions)
        samples[role] = samples[role][: cap * (20 if role == modalities.TEXT else 4)]
    counts = {r: len(v) for r, v in samples.items() if v}
    log(f"decoded a fitting sample in {time.time() - t0:.1f}s: {counts}")
    return samples


def _route(row: dict, samples: dict[str, list]) -> None:
    """A decoded row's arrays to the roles they fit (`Modality.fit_items`), its texts to the text role."""
    arrays = st_load(row["arrays"]) if row["arrays"] else {}
    for key, arr in arrays.items():
        if "." in key:  # an interleaved document's segment ("image.3"): its picture is a unit of its own
            continue
        m = modalities.by_array(key)
        if m is not None and m.fit_items is not None:
            for role, items in m.fit_items(arr).items():
                samples[role].extend(items)
    samples[modalities.TEXT].extend(fit_texts(json.loads(row["meta"])))
