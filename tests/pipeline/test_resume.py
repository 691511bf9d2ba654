"""A run killed with SIGKILL (while tokenizing, while writing) and started again writes what an uninterrupted run writes."""
import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from corpus_factory import make_mixed_corpus, tiny_recipe
from dataengine.pipeline.run import run_pipeline
from dataengine.recipe import load_recipe

# small parts so a kill lands mid-run; no mixture so every good input must arrive
EXECUTION = {"decode_batch": 2, "tokenize_batch": 4, "item_units": 4}


@pytest.fixture(scope="module")
def setup(tmp_path_factory, ray_local):
    base = tmp_path_factory.mktemp("resume")
    make_mixed_corpus(base / "corpus", broken=True)
    recipe_path = tiny_recipe(base, execution=EXECUTION, curate={"mixture": {"policy": "none"}})
    recipe = load_recipe(recipe_path, inputs=[str(base / "corpus")])
    reference = run_pipeline(recipe, base / "reference", log=lambda *_: None)  # also fits the tokenizers
    return {"base": base, "recipe": recipe_path, "reference": reference}


def cli_run(setup, out: Path, **env) -> subprocess.CompletedProcess:
    cmd = [sys.executable, "-m", "dataengine.cli", "run", str(setup["recipe"]), "--input",
           str(setup["base"] / "corpus"), "--output", str(out)]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=600, env={**os.environ, **env})


def fingerprint(manifest: dict) -> list:
    return [(s["path"], s["sha256"]) for s in manifest["shards"]] + [manifest["totals"]]


def test_killed_while_tokenizing_then_while_writing_resumes_to_the_same_output(setup):
    out = setup["base"] / "out"
    first = cli_run(setup, out, DATAENGINE_KILL_AFTER_PARTS="2")
    assert first.returncode == -signal.SIGKILL, first.stderr[-3000:]
    assert not out.exists(), "a killed run must leave no OUT behind"
    parts = list((setup["base"] / ".out.work" / "parts").glob("part-*.parquet"))
    # workers commit their own parts: the driver died after the 2nd, others may have landed meanwhile
    assert 2 <= len(parts) < len(list((setup["base"] / "reference" / "cache" / "candidates").glob("*.parquet")))

    second = cli_run(setup, out, DATAENGINE_KILL_AT="write")
    assert second.returncode == -signal.SIGKILL, second.stderr[-3000:]
    assert "resuming:" in second.stdout + second.stderr  # committed work was not redone
    assert not out.exists()
    assert list((setup["base"] / ".out.staging" / "parquet").glob("train-*.parquet")), "killed before writing"

    third = cli_run(setup, out)
    assert third.returncode == 0, third.stderr[-3000:]
    manifest = json.loads((out / "manifest.json").read_text())
    assert fingerprint(manifest) == fingerprint(setup["reference"])
    ref = setup["base"] / "reference"
    assert (out / "rejects.parquet").read_bytes() == (ref / "rejects.parquet").read_bytes()
    assert (out / "stats.json").read_text() == (ref / "stats.json").read_text()
    assert not (setup["base"] / ".out.work").exists() and not (setup["base"] / ".out.staging").exists()


def _map_workers(root_pid: int) -> list[int]:
    """Ray Data map-worker processes started under `root_pid` (a process tree walk over /proc)."""
    children: dict[int, list[int]] = {}
    names: dict[int, str] = {}
    for d in Path("/proc").iterdir():
        if not d.name.isdigit():
            continue
        try:
            ppid = int((d / "stat").read_text().rsplit(")", 1)[1].split()[1])
            names[int(d.name)] = (d / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except (OSError, IndexError, ValueError):
            continue
        children.setdefault(ppid, []).append(int(d.name))
    tree, stack = set(), [root_pid]
    while stack:
        pid = stack.pop()
        for c in children.get(pid, []):
            if c not in tree:
                tree.add(c)
                stack.append(c)
    return sorted(p for p in tree if "MapWorker" in names.get(p, ""))


def test_a_worker_killed_mid_run_is_retried_without_duplicates(setup):
    import time

    out = setup["base"] / "out-worker"
    cmd = [sys.executable, "-m", "dataengine.cli", "run", str(setup["recipe"]), "--input",
           str(setup["base"] / "corpus"), "--output", str(out)]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    parts = setup["base"] / ".out-worker.work" / "parts"
    killed = None
    deadline = time.time() + 300
    while killed is None and proc.poll() is None and time.time() < deadline:
        workers = _map_workers(proc.pid)
        if workers and parts.is_dir() and any(parts.glob("part-*.parquet")):
            os.kill(workers[0], signal.SIGKILL)
            killed = workers[0]
        time.sleep(0.05)
    stdout, stderr = proc.communicate(timeout=600)
    assert killed is not None, "the run ended before a worker could be killed; make the corpus larger"
    assert proc.returncode == 0, stderr[-3000:]
    manifest = json.loads((out / "manifest.json").read_text())
    assert fingerprint(manifest) == fingerprint(setup["reference"])
