"""The same recipe on a 2-node Ray cluster and on one node gives the same shards, and both nodes work."""
import json
import os
import subprocess
import sys
from pathlib import Path

from corpus_factory import make_mixed_corpus, tiny_recipe


def test_two_node_cluster_matches_single_node(tmp_path):
    corpus = tmp_path / "corpus"
    make_mixed_corpus(corpus, broken=True)
    # two 1-CPU workers on two 1-CPU nodes: one each (each decodes, tokenizes and writes its items' parts)
    execution = {"tokenize_num_cpus": 1.0, "tokenize_actors": 2, "decode_batch": 2, "tokenize_batch": 4,
                 "item_units": 4}
    recipe = tiny_recipe(tmp_path, execution=execution)
    outs = tmp_path / "multi", tmp_path / "single"
    driver = Path(__file__).with_name("multinode_driver.py")
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[2])}
    proc = subprocess.run([sys.executable, str(driver), str(recipe), str(corpus), *map(str, outs),
                           str(tmp_path / "trace")], capture_output=True, text=True, timeout=600, env=env)
    assert proc.returncode == 0, proc.stderr[-4000:]
    report = json.loads(proc.stdout.strip().splitlines()[-1])
    assert len(report["nodes"]) == 2
    worked = set(report["trace"].get("decode", [])) | set(report["trace"].get("tokenize", []))
    assert worked == set(report["nodes"]), report  # work ran on both nodes

    multi, single = (json.loads((o / "manifest.json").read_text()) for o in outs)
    assert [(s["path"], s["sha256"]) for s in multi["shards"]] == [(s["path"], s["sha256"]) for s in single["shards"]]
    assert (outs[0] / "rejects.parquet").read_bytes() == (outs[1] / "rejects.parquet").read_bytes()
    assert multi["totals"] == single["totals"]
