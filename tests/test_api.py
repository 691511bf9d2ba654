"""`import dataengine as de`: the API is the CLI's own functions, loaded on first use."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

import dataengine as de

DEMO = Path(__file__).resolve().parents[1] / "pipelines" / "demo.yaml"


def test_load_recipe_applies_overrides_and_validates():
    r = de.load_recipe(DEMO, inputs=["/tmp"], overrides=["curate.dedup.near=false"])
    assert r.curate.dedup.near is False and r.sources[0].path == "/tmp"
    with pytest.raises(de.RecipeError, match="threshold"):
        de.load_recipe(DEMO, overrides=["curate.dedup.threshold.image=7"])


def test_validate_names_the_bad_key():
    with pytest.raises(de.RecipeError, match="tokenizers"):
        de.validate({"name": "x", "sources": [{"name": "a", "path": "/tmp"}], "tokenizers": {"imag": {}}})


def test_modality_names_are_the_registry():
    assert de.modality_names()[:5] == ("text", "image", "video", "audio", "sensor")
    assert "depth" in de.modality_names()
    with pytest.raises(AttributeError):
        de.no_such_function  # noqa: B018


def test_importing_a_codec_does_not_load_the_api():
    code = "import sys, dataengine.decode.image; print('dataengine.api' in sys.modules, 'ray' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.split()
    assert out == ["False", "False"]
