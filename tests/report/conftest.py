"""One small real OUT for the report tests: the mixed corpus (every modality, broken files) through the pipeline."""
import shutil

import pytest

from corpus_factory import make_mixed_corpus, tiny_recipe
from dataengine.pipeline.run import run_pipeline
from dataengine.recipe import load_recipe


@pytest.fixture(scope="session")
def report_out(tmp_path_factory, ray_local):
    """OUT with rejects, a filter drop (image_width), a planted exact duplicate, mixture up-sampling, shards
    of 8 rows (the report reads only those holding the rows it shows)."""
    base = tmp_path_factory.mktemp("report")
    corpus = base / "corpus"
    make_mixed_corpus(corpus, broken=True)
    shutil.copy(corpus / "images" / "chelsea.png", corpus / "images" / "chelsea_copy.png")
    (corpus / "images" / "chelsea_copy.txt").write_text("The same cat, saved again under another name.\n")
    recipe = load_recipe(tiny_recipe(base, output={"shard_rows": 8}, curate={"filters": {"image_width": {"min": 80}, "text_chars": {"min": 20},
                                                               "audio_silence_ratio": {"max": 0.95}}}),
                         inputs=[str(corpus)])
    out = base / "out"
    run_pipeline(recipe, out, log=lambda *_: None)
    return out
