"""A small mixed corpus and tiny tokenizers fitted on it through `fit_tokenizers` (seconds)."""
from __future__ import annotations

import pytest
import torch

from corpus_factory import make_mixed_corpus, tiny_recipe
from dataengine.recipe import load_recipe
from dataengine.tokenize.fit import fit_tokenizers

@pytest.fixture(scope="session")
def fitted(tmp_path_factory):
    """{"corpus", "toks", "recipe"}: tiny tokenizers fitted on a small corpus with every modality."""
    base = tmp_path_factory.mktemp("evaluate")
    corpus = base / "corpus"
    make_mixed_corpus(corpus, broken=False)
    recipe_path = tiny_recipe(base, fit={"holdout_fraction": 0.3})
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
