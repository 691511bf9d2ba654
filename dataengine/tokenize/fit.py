"""Fit every tokenizer a recipe names on a sample of its inputs.

The sample is chosen by a seeded hash of each sample group's id (stable as the
corpus grows), decoded in-process with the same decode stage the pipeline uses,
and handed to each family's `fit`. Text is fitted on everything textual the
pipeline will encode: documents, captions, transcripts, labels and chat turns.
Outputs: `DIR/<role>/card.yaml` plus weights (safetensors or tokenizer.json).
"""
from __future__ import annotations

import time
from pathlib import Path

from dataengine import modalities
from dataengine.discover import discover
from dataengine.errors import RecipeError
from dataengine.evaluate.run import evaluate_role, resources_for, write_json
from dataengine.pipeline.decode_stage import decode_stage_for
from dataengine.progress import bar_safe, progress
from dataengine.recipe import Recipe, source_roots
from dataengine.tokenize.base import CARD_FILE, read_card
from dataengine.tokenize.registry import get_family, load_tokenizer
from dataengine.tokenize.samples import collect_samples, fit_order, resolved_params, split_units

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
    roles = [r for r in fit_order() if r in (roles or list(recipe.tokenizers))]
    sources = source_roots(recipe)
    found = discover(sources, max_file_bytes=recipe.decode.max_file_bytes)
    stage = decode_stage_for(recipe, stats=False)
    fit_units, held_units = split_units(recipe, found.units)
    samples = collect_samples(recipe, fit_units, stage, log)
    held = collect_samples(recipe, held_units, stage, log) if held_units else {r: [] for r in fit_order()}
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
        hook = modalities.get(role).fit_resources  # video: the fitted image tokenizer and the stills
        extra = hook(lambda name: load_tokenizer(tokdir / name), samples) if hook else {}
        t0 = time.time()
        log(f"fit {role} ({spec.family}) on {len(items)} items")
        tok = fam.fit(items, spec.params, seed=recipe.seed, log=lambda m, r=role: log(f"  [{r}] {m}"), **extra)
        tok.save(tokdir / role)
        summary[role] = {"items": len(items), "seconds": round(time.time() - t0, 1),
                         "vocab_size": tok.vocab_size, "weights_sha256": tok.card()["weights_sha256"]}
        log(f"  [{role}] vocab {tok.vocab_size}, {summary[role]['seconds']}s -> {tokdir / role}")
        _write_eval(recipe, role, tok, held[role], samples[modalities.TEXT], extra.get("image_tokenizer"), tokdir, log)
    return summary


def _write_eval(recipe: Recipe, role: str, tok, held_items: list, fit_texts: list, image_tok, tokdir: Path,
                log) -> None:
    """Measure the just-fitted tokenizer on the held-out split; `DIR/<role>/eval.json` beside its weights."""

    if not held_items:
        result = {"family": tok.family, "items": 0,
                  "error": f"no held-out {role} items (fit.holdout_fraction={recipe.fit.holdout_fraction}); "
                           f"run `dataengine tokenizers eval --all` on other inputs"}
    else:
        result = evaluate_role(role, tok, held_items[:200], fit_items=fit_texts if role == modalities.TEXT else None,
                               resources=resources_for(recipe, image_tokenizer=image_tok))
    # speeds vary run to run: logged, not stored, so a refit with the same seed writes the same bytes (DVC)
    write_json({k: v for k, v in result.items() if not k.endswith(("_items_per_s", "_seconds"))},
               tokdir / role / "eval.json")
    shown = {k: v for k, v in result.items() if isinstance(v, (int, float)) and not isinstance(v, bool)}
    log(f"  [{role}] held-out eval: " + ", ".join(f"{k}={v:.4g}" for k, v in list(shown.items())[:6]))
