"""Depth maps end to end through the registry: discovery groups scene.jpg + scene.depth.png + scene.txt
into one sample, the run tokenizes both with their own vocabulary ranges and composes depth tasks, and
inspect writes the decoded depth back as a 16-bit PNG in millimetres.

Real data: the Middlebury 2014 "motorcycle" left view and its disparity, as scikit-image ships them,
turned into metric depth with the scene's calibration (Z = f * B / (d + doffs) at full resolution)."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import polars as pl
import pytest
from PIL import Image

from corpus_factory import TINY_TOKENIZERS, tiny_recipe
from dataengine import modalities
from dataengine.discover import discover
from dataengine.modalities.depth.decode import decode_depth
from dataengine.modalities.depth.media import encode_depth_png
from dataengine.vocab import Vocab

SKIMAGE = Path(__import__("skimage").__file__).parent / "data"
F_PX, BASELINE_MM, DOFFS, SCALE = 3979.911, 193.001, 124.343, 4  # Middlebury calib; skimage's copy is 1/4 size


def _scene() -> tuple[np.ndarray, np.ndarray]:
    """(RGB uint8 [500, 741, 3], depth in metres [500, 741], 0 = no disparity)."""
    rgb = np.asarray(Image.open(SKIMAGE / "motorcycle_left.png").convert("RGB"))
    disp = np.load(SKIMAGE / "motorcycle_disp.npz")["arr_0"].astype(np.float64)
    depth = np.where(np.isfinite(disp), F_PX * BASELINE_MM / (disp * SCALE + DOFFS) / 1000.0, 0.0)
    return rgb, depth.astype(np.float32)


@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> Path:
    """Six non-overlapping tiles of the scene, each photo + depth + caption; one depth map alone."""
    root = tmp_path_factory.mktemp("depth") / "corpus"
    root.mkdir()
    rgb, depth = _scene()
    for i in range(2):
        for j in range(3):
            ys, xs = slice(i * 250, (i + 1) * 250), slice(j * 247, (j + 1) * 247)
            stem = f"tile{i}{j}"
            Image.fromarray(rgb[ys, xs]).save(root / f"{stem}.jpg", quality=90)
            (root / f"{stem}.depth.png").write_bytes(encode_depth_png(depth[ys, xs]))
            (root / f"{stem}.txt").write_text(f"Part {i}{j} of a workshop with a red motorcycle.\n")
    np.save(root / "alone.depth.npy", depth[:200, :200])
    return root


def test_discovery_forms_one_aligned_group(corpus):
    found = discover([("d", corpus)], max_file_bytes=2**26)
    assert not found.rejects
    tiles = [u for u in found.units if u.media.startswith("tile")]
    assert len(tiles) == 6 and all(u.kind == "image" and u.caption for u in tiles)
    assert json.loads(tiles[0].aligned) == {"depth": "tile00.depth.png"}
    (alone,) = [u for u in found.units if u.media == "alone.depth.npy"]
    assert alone.kind == "depth" and alone.aligned is None


@pytest.fixture(scope="module")
def run(corpus, tmp_path_factory, ray_local):
    from dataengine.inspect import decode_to
    from dataengine.pipeline.run import run_pipeline
    from dataengine.recipe import load_recipe

    base = tmp_path_factory.mktemp("depth-run")
    toks = {k: TINY_TOKENIZERS[k] for k in ("text", "image")}
    toks["depth"] = {"family": "fsq_depth", "params": {"size": 32, "channels": 16, "steps": 40, "batch_size": 4}}
    weights = {"image_to_caption": 0.1, "caption_to_image": 0.1, "image_to_depth": 1.0, "depth_to_image": 1.0}
    path = tiny_recipe(base, tokenizers=toks, fit={"holdout_fraction": 0.0},
                       compose={"tasks": {"image": weights}, "templates": {}},
                       curate={"filters": {}, "dedup": {"exact": True, "near": False}, "mixture": {"policy": "none"}})
    recipe = load_recipe(path, inputs=[str(corpus)])
    run_pipeline(recipe, base / "out", log=lambda *_: None)
    decoded = decode_to(base / "out", 8, base / "decoded", log=lambda *_: None)
    return {"out": base / "out", "decoded": decoded,
            "seq": pl.read_parquet(base / "out" / "parquet" / "*.parquet")}


def test_depth_has_its_own_vocabulary_range_and_markers(run):
    vocab = Vocab.load(run["out"] / "vocab.json")
    assert vocab.tokenizers["depth"]["modality"] == "depth"
    assert "<|depth_start|>" in vocab.specials and vocab.specials["<|system|>"] == 15  # format 1 ids unmoved
    start, end = vocab.tokenizer_range("depth")
    assert end - start == 1000  # fsq_depth's default levels 8*5*5*5


def test_aligned_samples_become_depth_tasks_with_depth_stats(run):
    seq = run["seq"]
    tasks = set(seq["task"].to_list())
    assert {"image_to_depth", "depth_to_image"} & tasks, tasks
    row = seq.filter(pl.col("task") == "image_to_depth").row(0, named=True) if "image_to_depth" in tasks else \
        seq.filter(pl.col("task") == "depth_to_image").row(0, named=True)
    assert row["kind"] == "image" and set(row["modalities"]) == {"image", "depth"}
    order = [s["modality"] for s in row["spans"]]
    assert order == (["image", "depth"] if row["task"] == "image_to_depth" else ["depth", "image"])
    stats = row["stats"]
    assert 0.5 < stats["depth_valid_ratio"] <= 1.0 and 1.0 < stats["depth_median_m"] < 10.0
    assert stats["image_width"] == 247.0
    assert any(r["role"] == "depth" and r["path"].endswith(".depth.png") for r in row["lineage"])
    alone = seq.filter(pl.col("kind") == "depth")
    assert alone.height == 1 and alone["modalities"][0].to_list() in (["depth"], ["depth", "text"], ["text", "depth"])


def test_inspect_writes_depth_back_as_16_bit_millimetres(run):
    pngs = [p for p in run["decoded"] if p.name.endswith(".depth.png")]
    assert pngs, [p.name for p in run["decoded"]]
    with Image.open(pngs[0]) as im:
        assert im.mode in ("I;16", "I")
    depth = decode_depth(pngs[0].read_bytes(), ".depth.png", max_pixels=10**6)
    assert depth.shape == (32, 32) and 0.5 < float(np.median(depth[depth > 0])) < 20.0


def test_the_registry_names_depth_only_through_its_entry_point():
    assert "depth" in modalities.names() and modalities.names()[:5] == modalities.BUILTIN
    assert modalities.kind_of(".depth.png") == "depth" and modalities.kind_of(".png") == "image"
    assert modalities.split_name("scene.depth.npy") == ("scene", ".depth.npy")
