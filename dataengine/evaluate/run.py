"""Evaluate every fitted tokenizer of a folder on held-out inputs.

`evaluate_tokenizers` discovers the inputs, keeps the units that fitting held
out (`samples.split_units`: a seeded hash, `fit.holdout_fraction`; ``use_all``
takes every unit, for folders fit never saw), decodes them with the recipe's
decode settings (`samples.collect_samples`; video frames also count as images, as
in fitting) and calls `evaluate_role` once per role found in ``DIR/<role>``.
`evaluate_role` is the per-role entry point that fitting can call too.
Every role reports ``items``, ``device``, ``family`` and
``encode_items_per_s`` / ``decode_items_per_s`` (after one warm-up item); a
role that cannot be measured reports ``error`` instead of stopping the others.
"""
from __future__ import annotations

import dataclasses
import json
import math
import time
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch

from dataengine import modalities
from dataengine.discover import discover
from dataengine.errors import RecipeError
from dataengine.evaluate.metrics import code_stats, roundtrip
from dataengine.pipeline.decode_stage import DecodeStage
from dataengine.pipeline.tokenize_stage import load_tokenizers
from dataengine.recipe import Recipe, Source, load_recipe, source_roots
from dataengine.tokenize.base import CARD_FILE
from dataengine.tokenize.samples import collect_samples, input_sizes, split_units

DEFAULT_MAX_ITEMS = 200
TEXT = modalities.TEXT


def default_recipe_path() -> Path:
    """pipelines/demo.yaml of this checkout."""
    return Path(__file__).resolve().parents[2] / "pipelines" / "demo.yaml"


def resources_for(recipe: Recipe, *, image_tokenizer: Any = None) -> dict:
    """What `evaluate_role` needs besides the items: each modality's (`Modality.eval_resources`: decode rates)
    and the image tokenizer."""
    out: dict = {}
    for m in modalities.registry().values():
        if m.eval_resources is not None:
            out.update(m.eval_resources(recipe.decode))
    return {**out, "image_tokenizer": image_tokenizer}


def device_name(tokenizer: Any) -> str:
    """"cpu" or "cuda:N" for the device a tokenizer runs on."""
    d = torch.device(getattr(tokenizer, "device", "cpu"))
    if d.type == "cuda":
        return f"cuda:{d.index if d.index is not None else torch.cuda.current_device()}"
    return d.type


def evaluate_role(role: str, tokenizer: Any, eval_items: list, *, fit_items: list | None = None,
                  resources: dict | None = None) -> dict:
    """Metrics of one fitted tokenizer on decoded eval items (see the modality modules).

    `fit_items`: the fitting texts (text only: the SentencePiece baseline trains
    on them). `resources`: `resources_for(recipe, image_tokenizer=...)`.
    """
    if role not in modalities.registry():
        raise ValueError(f"unknown role {role!r}; expected one of {modalities.names()}")
    items = list(eval_items)
    out: dict[str, Any] = {"family": tokenizer.family, "items": len(items), "device": device_name(tokenizer)}
    if not items:
        return {**out, "error": f"no {role} items to evaluate"}
    rt = roundtrip(tokenizer, items)
    out["encode_items_per_s"] = rt["encode_items_per_s"]
    out["decode_items_per_s"] = rt["decode_items_per_s"]
    if role == TEXT:
        out.update(_evaluate_text(tokenizer, fit_items, items, rt))
    elif modalities.get(role).evaluate is None:
        out["error"] = f"modality {role!r} has no evaluate hook"
    else:
        out.update(modalities.get(role).evaluate(tokenizer, items, rt, dict(resources or {})))
    return out


def _evaluate_text(tokenizer: Any, fit_texts: list | None, eval_texts: list[str], rt: dict) -> dict:
    """bytes/token here; the SentencePiece baseline from `dataengine.evaluate.text` when importable."""
    n_bytes = sum(len(t.encode("utf-8")) for t in eval_texts)
    n_tokens = sum(int(c.size) for c in rt["codes"])
    out: dict[str, Any] = {"bytes_per_token": n_bytes / max(1, n_tokens),
                           "tokens_per_item": n_tokens / len(eval_texts),
                           **code_stats(rt["codes"], tokenizer.vocab_size)}
    try:
        from dataengine.evaluate.text import evaluate_text
    except ImportError as e:
        out["error"] = f"text baseline unavailable ({type(e).__name__}: {e})"
        return out
    if not fit_texts:
        out["error"] = "no fitting texts for the baseline (pass fit_items)"
        return out
    try:
        out.update(evaluate_text(tokenizer, list(fit_texts), list(eval_texts)))
    except Exception as e:  # the baseline is someone else's module: report, do not stop the eval
        out["error"] = f"evaluate_text failed ({type(e).__name__}: {e})"
    return out


def _has_model(tok: Any) -> bool:
    owner = getattr(tok, "image", tok)  # `frames` runs the image tokenizer's model
    return isinstance(getattr(tok, "model", None), torch.nn.Module) or isinstance(
        getattr(owner, "model", None), torch.nn.Module)


def load_role_tokenizers(tokdir: Path, *, log: Callable = print) -> dict[str, Any]:
    """{role: tokenizer} for every ``tokdir/<role>/card.yaml``; video gets the image tokenizer."""
    roles = [r for r in modalities.names() if (tokdir / r / CARD_FILE).is_file()]
    if not roles:
        raise RecipeError(f"no fitted tokenizers in {tokdir} (no <role>/card.yaml); fit them first with "
                          f"`dataengine fit RECIPE --input PATH --tokenizers {tokdir}`")
    toks: dict[str, Any] = load_tokenizers(tokdir, roles)
    device = "cuda:0" if torch.cuda.is_available() else "cpu"
    for tok in toks.values():
        if _has_model(tok):  # stateless families (bpe, sensor_bins) stay on the CPU they run on
            tok.to(device)
    log(f"loaded {', '.join(f'{r} ({t.family})' for r, t in toks.items())} from {tokdir} on {device}")
    return toks


def _as_recipe(recipe: Recipe | str | Path | None, inputs: list | None) -> Recipe:
    if recipe is None:
        recipe = default_recipe_path()
        if not recipe.is_file():
            raise RecipeError(f"no default recipe at {recipe}; pass one with --recipe RECIPE")
    if not isinstance(recipe, Recipe):
        return load_recipe(recipe, inputs=[str(p) for p in inputs] if inputs else None)
    if inputs:
        sources = [Source(name=Path(p).resolve().name or f"input{i}", path=str(Path(p).resolve()))
                   for i, p in enumerate(inputs)]
        recipe = dataclasses.replace(recipe, sources=sources)
    return recipe


def _decode_settings(recipe: Recipe, toks: dict, log: Callable):
    """A decode stage matching the tokenizers on disk (input sizes, audio rate), and the recipe it implies."""
    sizes = input_sizes(recipe)
    for m in modalities.registry().values():
        if m.size_param and m.name in toks and toks[m.name].params.get(m.size_param):
            sizes[m.name] = int(toks[m.name].params[m.size_param])
    decode = recipe.decode
    rate = toks["audio"].params.get("sample_rate") if "audio" in toks else None
    if rate and int(rate) != decode.audio.sample_rate:
        log(f"decoding audio at the tokenizer's {rate} Hz (the recipe says {decode.audio.sample_rate})")
        decode = dataclasses.replace(decode, audio=dataclasses.replace(decode.audio, sample_rate=int(rate)))
    recipe = dataclasses.replace(recipe, decode=decode)
    return DecodeStage(decode=decode, sizes=sizes, modalities=frozenset(toks)), recipe


def evaluate_tokenizers(tokdir: Path, recipe: Recipe | str | Path | None = None, inputs: list | None = None, *,
                        use_all: bool = False, max_items: int = DEFAULT_MAX_ITEMS, log: Callable = print) -> dict:
    """{"meta": {...}, role: metrics, ...} for every fitted tokenizer in `tokdir`.

    `recipe`: a Recipe, a recipe path, or None for pipelines/demo.yaml; `inputs`
    replace its sources. At most `max_items` eval items per role.
    """
    t_start = time.time()
    tokdir = Path(tokdir)
    recipe = _as_recipe(recipe, inputs)
    sources = source_roots(recipe)
    toks = load_role_tokenizers(tokdir, log=log)
    stage, recipe = _decode_settings(recipe, toks, log)
    found = discover(sources, max_file_bytes=recipe.decode.max_file_bytes)
    fit_units, held_units = split_units(recipe, found.units)
    eval_units = found.units if use_all else held_units
    capped = dataclasses.replace(recipe, fit=dataclasses.replace(recipe.fit, max_items=max_items))
    samples = collect_samples(capped, eval_units, stage, log=log)
    fit_texts = collect_samples(recipe, fit_units, stage, log=lambda *_: None)[TEXT] if TEXT in toks else None
    resources = resources_for(recipe, image_tokenizer=toks.get("image"))
    split = "all" if use_all else "held-out"
    results: dict[str, Any] = {"meta": {
        "tokenizers": str(tokdir), "recipe": recipe.name, "inputs": [str(p) for _, p in sources],
        "split": split, "holdout_fraction": recipe.fit.holdout_fraction, "seed": recipe.seed,
        "units": {"eval": len(eval_units), "fit": len(fit_units)}, "max_items": max_items,
        "fit_texts": len(fit_texts or []),
    }}
    for role, tok in toks.items():
        items = samples.get(role, [])[:max_items]
        t0 = time.time()
        if not items:
            hint = "" if use_all else "; pass --all to evaluate on every input"
            results[role] = {"family": tok.family, "items": 0, "device": device_name(tok),
                             "error": f"no {split} {role} items in the inputs{hint}"}
            continue
        try:
            results[role] = evaluate_role(role, tok, items, fit_items=fit_texts if role == TEXT else None,
                                          resources=resources)
        except Exception as e:  # one broken role must not hide the others
            results[role] = {"family": tok.family, "items": len(items), "device": device_name(tok),
                             "error": f"{type(e).__name__}: {e}"}
        log(f"eval {role} ({tok.family}) on {len(items)} {split} items: {time.time() - t0:.1f}s")
    results["meta"]["seconds"] = round(time.time() - t_start, 1)
    return results


def _fmt(v: Any) -> str:
    if isinstance(v, bool) or v is None:
        return str(v)
    if isinstance(v, (int, np.integer)):
        return str(int(v))
    return f"{float(v):.4g}" if isinstance(v, (float, np.floating)) else str(v)


def format_table(results: dict) -> list[str]:
    """A compact block per role: headline metrics, then speed and device."""
    lines = []
    for role in modalities.names():
        r = results.get(role)
        if r is None:
            continue
        lines.append(f"{role:<7} {r.get('family', '?'):<12} items {r.get('items', 0):<4} {r.get('device', '')}")
        keys = [k for k in modalities.get(role).eval_keys if k in r] + [
            k for k in ("encode_items_per_s", "decode_items_per_s") if k in r]
        cells = [f"{k} {_fmt(r[k])}" for k in keys]
        for i in range(0, len(cells), 4):
            lines.append("        " + "   ".join(cells[i : i + 4]))
        if r.get("error"):
            lines.append(f"        error: {r['error']}")
    return lines


def to_jsonable(x: Any) -> Any:
    """numpy scalars/arrays to Python; non-finite floats to None (strict JSON)."""
    if isinstance(x, dict):
        return {str(k): to_jsonable(v) for k, v in x.items()}
    if isinstance(x, (list, tuple, np.ndarray)):
        return [to_jsonable(v) for v in (x.tolist() if isinstance(x, np.ndarray) else x)]
    if isinstance(x, (bool, np.bool_)):
        return bool(x)
    if isinstance(x, (int, np.integer)):
        return int(x)
    if isinstance(x, (float, np.floating)):
        return float(x) if math.isfinite(float(x)) else None
    return x


def write_json(results: dict, path: Path) -> Path:
    """Write results as strict JSON (sorted keys within roles, 2-space indent)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(to_jsonable(results), indent=2, allow_nan=False) + "\n")
    return path
