"""A small mixed corpus and tiny tokenizers fitted on it through `fit_tokenizers` (seconds)."""
from __future__ import annotations

from pathlib import Path

import pytest
import torch
import yaml

from corpus_factory import make_mixed_corpus
from dataengine.recipe import load_recipe
from dataengine.tokenize.fit import fit_tokenizers

ROOT = Path(__file__).resolve().parents[2]
TINY_TOKENIZERS = {
    "text": {"family": "bpe", "params": {"vocab_size": 400}},
    "image": {"family": "fsq_image", "params": {"size": 32, "downsample": 8, "channels": 16, "steps": 30,
                                                "batch_size": 8}},
    "video": {"family": "frames"},
    "audio": {"family": "mel_fsq", "params": {"sample_rate": 16000, "steps": 20, "channels": 32, "batch_size": 4}},
    "sensor": {"family": "sensor_bins", "params": {"n_bins": 64}},
}


@pytest.fixture(scope="session")
def fitted(tmp_path_factory):
    """{"corpus", "toks", "recipe"}: tiny tokenizers fitted on a small corpus with every modality."""
    base = tmp_path_factory.mktemp("evaluate")
    corpus = base / "corpus"
    make_mixed_corpus(corpus, broken=False)
    demo = yaml.safe_load((ROOT / "pipelines" / "demo.yaml").read_text())
    demo.update(tokenizers=TINY_TOKENIZERS, tokenizers_dir=str(base / "toks"))
    demo["fit"]["holdout_fraction"] = 0.3
    recipe_path = base / "recipe.yaml"
    recipe_path.write_text(yaml.safe_dump(demo))
    recipe = load_recipe(recipe_path, inputs=[str(corpus)])
    prev = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        fit_tokenizers(recipe, base / "toks", log=lambda *_: None)
    finally:
        torch.set_num_threads(prev)
    return {"corpus": corpus, "toks": base / "toks", "recipe": recipe, "recipe_path": recipe_path}


@pytest.fixture(scope="module", autouse=True)
def one_torch_thread():
    """One thread, set before module fixtures run: on a busy 2-core machine two threads mostly spin-wait."""
    prev = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(prev)
