"""A run killed with SIGKILL (while tokenizing, while writing), or stopped by a full disk, and
started again writes what an uninterrupted run writes."""
import json
import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from corpus_factory import make_mixed_corpus, tiny_recipe
from dataengine import diskspace
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


def _private_mounts() -> list[str] | None:
    """A command prefix giving a private mount namespace where a small tmpfs can be mounted (as
    root, or as a user where user namespaces are allowed); None where neither works."""
    unshare = shutil.which("unshare")
    probe = "d=$(mktemp -d) && mount -t tmpfs -o size=64k tmpfs $d && umount $d; rc=$?; rmdir $d; exit $rc"
    for prefix in ([unshare, "--mount"], [unshare, "--user", "--map-root-user", "--mount"]) if unshare else ():
        try:
            if subprocess.run(prefix + ["sh", "-c", probe], capture_output=True, timeout=60).returncode == 0:
                return prefix
        except (OSError, subprocess.TimeoutExpired):
            pass
    return None


# Both runs in one namespace: the tmpfs (and the partial folders on it) lives as long as the shell.
ON_SMALL_DISK = """set -u
mount -t tmpfs -o size="$SIZE" tmpfs "$DISK" || exit 90
run() { "$PY" -m dataengine.cli run "$RECIPE" --input "$CORPUS" --output "$DISK/out" --address local; }
run >"$LOGS/full.log" 2>&1; echo $? >"$LOGS/full.rc"
[ -e "$DISK/out" ] && touch "$LOGS/out-existed"
mount -o remount,size=256m "$DISK" || exit 91
run >"$LOGS/again.log" 2>&1; echo $? >"$LOGS/again.rc"
cp "$DISK/out/manifest.json" "$DISK/out/rejects.parquet" "$LOGS/" 2>/dev/null
ls -A "$DISK" >"$LOGS/beside.txt"
"""


def _check_disk_full(log: str, out: Path) -> None:
    assert "error: the disk holding" in log and " is full (" in log, log[-3000:]
    assert "nothing was written to OUT" in log and "Traceback" not in log, log[-3000:]
    assert "Unhandled error" not in log, log[-3000:]  # the failed step's other tasks stay quiet
    assert not out.exists()


def test_a_full_tmpfs_is_a_clear_error_and_the_rerun_with_room_writes_the_same_shards(setup):
    prefix = _private_mounts()
    if prefix is None:
        pytest.skip("no private mount namespace here (unshare --mount, as root or in a user namespace); "
                    "test_a_simulated_full_disk covers the error path")
    base, ref = setup["base"], setup["base"] / "reference"
    disk, logs = base / "small-disk", base / "small-disk-logs"
    disk.mkdir()
    logs.mkdir()
    # room for the tokenizers, the listing and every candidate part, not for the shards after them
    size = diskspace.tree_bytes(ref / "tokenizers", ref / "cache") + 128 * 1024
    env = {**os.environ, "SIZE": str(size), "DISK": str(disk), "LOGS": str(logs), "PY": sys.executable,
           "RECIPE": str(setup["recipe"]), "CORPUS": str(base / "corpus")}
    done = subprocess.run(prefix + ["sh", "-c", ON_SMALL_DISK], env=env, capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stderr[-3000:]
    full = (logs / "full.log").read_text()
    assert (logs / "full.rc").read_text().strip() == "3", full[-3000:]
    _check_disk_full(full, logs / "out-existed")
    assert "while curating and writing the shards" in full, full[-3000:]
    again = (logs / "again.log").read_text()
    assert (logs / "again.rc").read_text().strip() == "0", again[-3000:]
    assert "resuming:" in again  # the decoded and tokenized parts on the full disk were reused
    assert fingerprint(json.loads((logs / "manifest.json").read_text())) == fingerprint(setup["reference"])
    assert (logs / "rejects.parquet").read_bytes() == (ref / "rejects.parquet").read_bytes()
    assert (logs / "beside.txt").read_text().split() == ["out"]  # nothing partial left beside OUT


def test_a_simulated_full_disk_while_decoding_is_a_clear_error_and_resumes(setup):
    out = setup["base"] / "out-enospc"
    first = cli_run(setup, out, DATAENGINE_FULL_AFTER_PARTS="2")
    assert first.returncode == 3, first.stderr[-3000:]
    _check_disk_full(first.stderr, out)
    assert "while decoding and tokenizing" in first.stderr
    parts = setup["base"] / ".out-enospc.work" / "parts"
    assert len(list(parts.glob("part-*.parquet"))) >= 2
    assert not list(parts.glob(".*.tmp")), "a failed part write must not leave its temporary file"
    second = cli_run(setup, out)
    assert second.returncode == 0, second.stderr[-3000:]
    assert "resuming:" in second.stdout + second.stderr
    assert fingerprint(json.loads((out / "manifest.json").read_text())) == fingerprint(setup["reference"])
