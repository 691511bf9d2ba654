"""The Python API, as `import dataengine as de` shows it: the CLI's verbs as functions.

    import dataengine as de

    recipe = de.load_recipe("pipelines/demo.yaml", inputs=["data/demo-corpus"],
                            overrides=["curate.dedup.near=false"])   # validated before any work
    de.fit(recipe, "tokenizers/demo")                                # fit what is missing (or all: force=True)
    manifest = de.run(recipe, "out/demo")                            # a local Ray, or address="auto"
    train = de.read_shards("out/demo", split="train")                # a Polars frame of sequences
    tok = de.load_tokenizer("tokenizers/demo/image")                 # any fitted tokenizer, by its card
    de.modality_names()                                              # ('text', 'image', ..., 'depth')

Each function is the one the CLI calls; errors are `dataengine.errors.RecipeError` with the fix in
the message.
"""
from __future__ import annotations

from pathlib import Path

import polars as pl

from dataengine import modalities as _registry
from dataengine.errors import RecipeError
from dataengine.pipeline.run import run_pipeline
from dataengine.recipe import Recipe, parse_recipe
from dataengine.recipe import load_recipe as _load
from dataengine.tokenize.base import Tokenizer
from dataengine.tokenize.fit import ensure_tokenizers, fit_tokenizers
from dataengine.tokenize.registry import load_tokenizer as _load_tokenizer

__all__ = ["Recipe", "RecipeError", "fit", "load_recipe", "load_tokenizer", "modality_names", "read_shards",
           "run", "validate"]


def load_recipe(path: str | Path, *, inputs: list[str] | None = None, overrides: list[str] | None = None) -> Recipe:
    """Read and validate a recipe file. `inputs` replace its sources (folders or s3:// URIs, like
    ``--input``); `overrides` are ``dotted.key=value`` strings (like ``--set``, values read as YAML)."""
    return _load(path, inputs=inputs, overrides=overrides)


def validate(data: dict, *, base_dir: str | Path = ".") -> Recipe:
    """A recipe from a mapping (what the YAML file would hold), validated; relative paths resolve
    against `base_dir`."""
    return parse_recipe(data, base_dir=base_dir)


def fit(recipe: Recipe, tokenizers_dir: str | Path, *, roles: list[str] | None = None, force: bool = False,
        log=print) -> dict:
    """Fit the recipe's tokenizers into `tokenizers_dir` (`DIR/<role>/card.yaml` + weights + eval.json).
    Without `force`, only missing ones are fitted and stale ones are an error; returns per-role facts."""
    if force or roles:
        return fit_tokenizers(recipe, Path(tokenizers_dir), roles=roles, log=log)
    ensure_tokenizers(recipe, Path(tokenizers_dir), log=log)
    return {}


def run(recipe: Recipe, output: str | Path, *, tokenizers_dir: str | Path | None = None, address: str | None = None,
        report: bool = True, log=print) -> dict:
    """Run the job end to end into `output` (a folder or s3:// URI); returns its manifest. `address`:
    a Ray cluster ("auto", "ray://..."), default a local Ray."""
    return run_pipeline(recipe, output, tokenizers_dir=Path(tokenizers_dir) if tokenizers_dir else None,
                        address=address, log=log, report=report)


def read_shards(output: str | Path, *, split: str | None = None, columns: list[str] | None = None) -> pl.DataFrame:
    """The sequences of a finished run (its Parquet shards), optionally one split ("train", "val")."""
    files = sorted((Path(output) / "parquet").glob("*.parquet"))
    if not files:
        raise RecipeError(f"{output} has no parquet/ shards; pass the output folder of a finished run")
    frame = pl.scan_parquet(files)
    if split is not None:
        frame = frame.filter(pl.col("split") == split)
    return frame.select(columns).collect() if columns else frame.collect()


def load_tokenizer(directory: str | Path, **resources) -> Tokenizer:
    """A fitted tokenizer from its folder (``card.yaml`` names the family); `resources` as the family needs
    them (``image_tokenizer=`` for video)."""
    return _load_tokenizer(directory, **resources)


def modality_names() -> tuple[str, ...]:
    """The registered modalities, in vocabulary order (built-ins, then entry-point plugins by name)."""
    return _registry.names()
