"""Fit every tokenizer a recipe names on a sample of its inputs.

The sample is chosen by a seeded hash of each sample group's id (stable as the
corpus grows), decoded in-process with the same decode stage the pipeline uses,
and handed to each family's `fit`. Text is fitted on everything textual the
pipeline will encode: documents, captions, transcripts, labels and chat turns.
Outputs: `DIR/<role>/card.yaml` plus weights (safetensors or tokenizer.json).
"""
from __future__ import annotations

import hashlib
import json
import time
from pathlib import Path

from safetensors.numpy import load as st_load

from dataengine.discover import discover
from dataengine.errors import RecipeError
from dataengine.progress import bar_safe, progress
from dataengine.recipe import Recipe, source_roots
from dataengine.tokenize.base import CARD_FILE, read_card, resolve_params
from dataengine.tokenize.registry import get_family, load_tokenizer

FIT_ORDER = ("text", "image", "video", "audio", "sensor")  # video needs the fitted image tokenizer


def image_size_of(recipe: Recipe) -> int | None:
    spec = recipe.tokenizers.get("image")
    if spec is None:
        return None
    fam = get_family(spec.family)
    return int(resolve_params(spec.family, fam.defaults, spec.params)["size"])


def resolved_params(recipe: Recipe, role: str) -> dict:
    spec = recipe.tokenizers[role]
    return resolve_params(spec.family, get_family(spec.family).defaults, spec.params)


def fitted_state(recipe: Recipe, tokdir: Path, role: str) -> str:
    """'missing', 'ok', or a sentence saying how the fitted one differs from the recipe."""
    directory = Path(tokdir) / role
    if not (directory / CARD_FILE).is_file():
        return "missing"
    card = read_card(directory)
    spec = recipe.tokenizers[role]
    if card["family"] != spec.family:
        return f"family {card['family']!r} on disk, {spec.family!r} in the recipe"
    want = resolved_params(recipe, role)
    diff = {k: (card["params"].get(k), v) for k, v in want.items() if card["params"].get(k) != v}
    return "ok" if not diff else f"params differ (on disk, recipe): {diff}"


def ensure_tokenizers(recipe: Recipe, tokdir: Path, *, log=print) -> None:
    """Fit the tokenizers that are missing; refuse to silently use ones fitted with other params."""
    states = {role: fitted_state(recipe, tokdir, role) for role in recipe.tokenizers}
    stale = {r: s for r, s in states.items() if s not in ("ok", "missing")}
    if stale:
        lines = "; ".join(f"{r}: {s}" for r, s in stale.items())
        raise RecipeError(
            f"tokenizers in {tokdir} do not match the recipe ({lines}). Refit them with "
            f"`dataengine fit RECIPE --input PATH --tokenizers {tokdir} --force`, or point "
            f"`tokenizers_dir` (or --tokenizers) at another folder"
        )
    missing = [r for r, s in states.items() if s == "missing"]
    if missing:
        log(f"fitting missing tokenizers {missing} into {tokdir}")
        fit_tokenizers(recipe, tokdir, roles=missing, log=log)


def fit_tokenizers(recipe: Recipe, tokdir: Path, *, roles: list[str] | None = None, log=print) -> dict:
    """Fit `roles` (default: all) and save them under `tokdir`; returns per-role summaries."""
    tokdir = Path(tokdir)
    roles = [r for r in FIT_ORDER if r in (roles or list(recipe.tokenizers))]
    sources = source_roots(recipe)
    found = discover(sources, max_file_bytes=recipe.decode.max_file_bytes)
    stage = decode_stage_for(recipe, stats=False)
    fit_units, held_units = split_units(recipe, found.units)
    samples = collect_samples(recipe, fit_units, stage, log)
    held = collect_samples(recipe, held_units, stage, log) if held_units else {r: [] for r in FIT_ORDER}
    short = [r for r in roles if len(samples[r]) < recipe.fit.min_items]
    if short and held_units:  # a tiny corpus: better to fit on the held-out items than not at all
        log(f"too few items outside the held-out split for {short}: fitting them on held-out items too")
        for r in short:
            samples[r] += held[r]
    summary = {}
    bar = progress(roles, "fit tokenizers", unit="tokenizer")  # each trained family adds its own step bar
    log = bar_safe(log)
    for role in bar:
        bar.set_postfix_str(role, refresh=False)
        items = samples[role]
        if len(items) < recipe.fit.min_items:
            raise RecipeError(
                f"cannot fit tokenizers.{role}: the inputs hold {len(items)} decodable {role} items "
                f"(fit.min_items={recipe.fit.min_items}); add {role} files or remove tokenizers.{role}"
            )
        spec = recipe.tokenizers[role]
        fam = get_family(spec.family)
        extra = {}
        if role == "video":  # frames wraps the image tokenizer; causal_video builds on it + stills
            extra["image_tokenizer"] = load_tokenizer(tokdir / "image")
            extra["images"] = samples["image"]
        t0 = time.time()
        log(f"fit {role} ({spec.family}) on {len(items)} items")
        tok = fam.fit(items, spec.params, seed=recipe.seed, log=lambda m, r=role: log(f"  [{r}] {m}"), **extra)
        tok.save(tokdir / role)
        summary[role] = {"items": len(items), "seconds": round(time.time() - t0, 1),
                         "vocab_size": tok.vocab_size, "weights_sha256": tok.card()["weights_sha256"]}
        log(f"  [{role}] vocab {tok.vocab_size}, {summary[role]['seconds']}s -> {tokdir / role}")
        _write_eval(recipe, role, tok, held[role], samples["text"], extra.get("image_tokenizer"), tokdir, log)
    return summary


def _write_eval(recipe: Recipe, role: str, tok, held_items: list, fit_texts: list, image_tok, tokdir: Path,
                log) -> None:
    """Measure the just-fitted tokenizer on the held-out split; `DIR/<role>/eval.json` beside its weights."""
    from dataengine.evaluate.run import evaluate_role, resources_for, write_json

    if not held_items:
        result = {"family": tok.family, "items": 0,
                  "error": f"no held-out {role} items (fit.holdout_fraction={recipe.fit.holdout_fraction}); "
                           f"run `dataengine tokenizers eval --all` on other inputs"}
    else:
        result = evaluate_role(role, tok, held_items[:200], fit_items=fit_texts if role == "text" else None,
                               resources=resources_for(recipe, image_tokenizer=image_tok))
    # speeds vary run to run: logged, not stored, so a refit with the same seed writes the same bytes (DVC)
    write_json({k: v for k, v in result.items() if not k.endswith("_items_per_s")}, tokdir / role / "eval.json")
    shown = {k: v for k, v in result.items() if isinstance(v, (int, float)) and not isinstance(v, bool)}
    log(f"  [{role}] held-out eval: " + ", ".join(f"{k}={v:.4g}" for k, v in list(shown.items())[:6]))


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


def decode_stage_for(recipe: Recipe, *, stats: bool = True):
    """The decode stage the recipe implies; `stats=False` skips quality stats (fitting needs none)."""
    from dataengine.pipeline.decode_stage import DecodeStage

    return DecodeStage(decode=recipe.decode, image_size=image_size_of(recipe), modalities=frozenset(recipe.tokenizers),
                       stats=stats)


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
    samples: dict[str, list] = {role: [] for role in FIT_ORDER}
    t0 = time.time()
    picked = [u for _, group in sorted(by_kind.items()) for u in group[:cap]]
    for u in progress(picked, "decode fitting sample", unit="group"):
        for row in stage.decode_unit(u.to_row()):
            if row["status"] != "ok":
                continue
            _route(row, samples)
    for role in samples:  # keep each role's sample bounded (video frames, captions)
        samples[role] = samples[role][: cap * (20 if role == "text" else 4)]
    counts = {r: len(v) for r, v in samples.items() if v}
    log(f"decoded a fitting sample in {time.time() - t0:.1f}s: {counts}")
    return samples


def _route(row: dict, samples: dict[str, list]) -> None:
    meta = json.loads(row["meta"])
    arrays = st_load(row["arrays"]) if row["arrays"] else {}
    if "image" in arrays:
        samples["image"].append(arrays["image"])
    if "frames" in arrays:
        samples["video"].append(arrays["frames"])
        samples["image"].extend(list(arrays["frames"][:: max(1, len(arrays["frames"]) // 2)]))
    if "audio" in arrays:
        samples["audio"].append(arrays["audio"])
    if "sensor" in arrays:
        samples["sensor"].append(arrays["sensor"])
    if meta.get("text"):
        samples["text"].append(meta["text"])
    record = meta.get("record") or {}
    if record.get("text"):
        samples["text"].append(record["text"])
    for m in record.get("messages", []):
        samples["text"].append(m["content"])
