"""Shared pieces of the benchmarks: the work folder, the corpus, the tokenizers, machine facts, results.

Everything slow to make is cached under the bench work folder (``--work``, or
``$DATAENGINE_BENCH_WORK``, default ``/tmp/dataengine-bench``): the demo corpus
(``corpus-base/``), its ``N`` copies (``corpus-xN/``) and the tokenizers fitted on
it (``tokenizers/``). A rerun reuses them, so only the first run pays the
minute for the corpus and the ~3 minutes of fitting.
"""
from __future__ import annotations

import json
import os
import platform
import shlex
import shutil
import sys
import time
from importlib import metadata
from pathlib import Path

from dataengine.proctree import Sampler, TreeRss, descendants, process_table  # noqa: F401  (TreeRss: scaling.py)

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "bench" / "results"
RECIPE = ROOT / "pipelines" / "demo.yaml"
DEFAULT_WORK = Path(os.environ.get("DATAENGINE_BENCH_WORK", "/tmp/dataengine-bench"))
PACKAGES = ("dataengine", "ray", "pyarrow", "polars", "numpy", "torch", "webdataset", "av", "tokenizers",
            "datasketch")
DONE = ".complete"  # written last into a cached folder: a folder without it was interrupted and is remade


def log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


# ---------------------------------------------------------------------------------------- facts
def machine() -> dict:
    info = {"platform": platform.platform(), "python": platform.python_version(), "cpu_count": os.cpu_count(),
            "load_avg_1_5_15": [round(x, 2) for x in os.getloadavg()]}
    try:
        info["cpu_affinity"] = len(os.sched_getaffinity(0))
    except AttributeError:
        pass
    try:
        names = [ln.split(":", 1)[1].strip() for ln in Path("/proc/cpuinfo").read_text().splitlines()
                 if ln.startswith("model name")]
        info["cpu_model"] = names[0] if names else platform.processor()
        mem = [ln for ln in Path("/proc/meminfo").read_text().splitlines() if ln.startswith("MemTotal")]
        info["mem_total_gib"] = round(int(mem[0].split()[1]) / 2**20, 1) if mem else None
    except OSError:
        pass
    try:
        import torch

        info["torch_threads"] = torch.get_num_threads()
        info["cuda"] = torch.cuda.get_device_name(0) if torch.cuda.is_available() else None
    except ImportError:
        pass
    return info


def versions(packages=PACKAGES) -> dict:
    out = {}
    for pkg in packages:
        try:
            out[pkg] = metadata.version(pkg)
        except metadata.PackageNotFoundError:
            out[pkg] = None
    return out


def command() -> str:
    """The exact command line, runnable from the repository root."""
    return " ".join(shlex.quote(a) for a in [os.path.relpath(sys.executable, ROOT), *sys.argv])


def write_result(name: str, result: dict, results_dir: Path = RESULTS) -> Path:
    """`results_dir/<name>.json` with the command, the machine and the versions first."""
    doc = {"benchmark": name, "command": command(), "machine": machine(), "versions": versions(), **result}
    path = Path(results_dir) / f"{name}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(doc, indent=1, default=str) + "\n")
    log(f"wrote {path}")
    return path


# ---------------------------------------------------------------------------------------- inputs
def base_corpus(work: Path) -> Path:
    """The demo corpus (deterministic, seed 0), written once."""
    path = Path(work) / "corpus-base"
    if not (path / DONE).is_file():
        from dataengine.democorpus import write_demo_corpus

        shutil.rmtree(path, ignore_errors=True)
        log(f"writing the demo corpus to {path} (about a minute, once)")
        write_demo_corpus(path, speech=None, seed=0)
        (path / DONE).write_text("")
    return path


def replicated_corpus(work: Path, copies: int) -> Path:
    """`copies` copies of the demo corpus side by side (`copy-000/...`), as hard links where possible.

    Every copy has distinct paths, so distinct unit ids: decode and tokenize do all
    the work again. Curation sees exact duplicates (same content hash) and keeps one
    of each, so the written shards stay about the size of one copy.
    """
    base = base_corpus(work)
    path = Path(work) / f"corpus-x{copies}"
    if (path / DONE).is_file():
        return path
    shutil.rmtree(path, ignore_errors=True)
    for k in range(copies):
        shutil.copytree(base, path / f"copy-{k:03d}", copy_function=_link_or_copy,
                        ignore=shutil.ignore_patterns(DONE))
    (path / DONE).write_text("")
    return path


def _link_or_copy(src: str, dst: str) -> None:
    try:
        os.link(src, dst)
    except OSError:
        shutil.copy2(src, dst)


def corpus_bytes(path: Path) -> int:
    return sum(p.stat().st_size for p in Path(path).rglob("*") if p.is_file() and p.name != DONE)


def tokenizers(work: Path, recipe_path: Path = RECIPE) -> Path:
    """The demo recipe's tokenizers fitted on the demo corpus (about 3 minutes, once)."""
    from dataengine.recipe import load_recipe
    from dataengine.tokenize.fit import ensure_tokenizers, fitted_state

    tokdir = Path(work) / "tokenizers"
    recipe = load_recipe(recipe_path, inputs=[str(base_corpus(work))])
    seed = ROOT / "tokenizers" / "demo"  # `make demo` fits the same recipe on the same corpus: reuse them
    for role in recipe.tokenizers:
        if fitted_state(recipe, tokdir, role) == "missing" and fitted_state(recipe, seed, role) == "ok":
            log(f"tokenizer {role}: copied from {seed / role}")
            shutil.copytree(seed / role, tokdir / role)
    ensure_tokenizers(recipe, tokdir, log=log)
    return tokdir


def work_dir(arg: str | None) -> Path:
    path = Path(arg) if arg else DEFAULT_WORK
    path.mkdir(parents=True, exist_ok=True)
    return path


# ---------------------------------------------------------------------------------------- processes
def tree_cpu() -> dict[int, tuple[str, float]]:
    """CPU seconds (user + system) of this process and every descendant: {pid: (name, seconds)}.

    The name is the process title (Ray workers set theirs, e.g. ``ray::MapWorker(...)``).
    """
    tick = os.sysconf("SC_CLK_TCK")
    table = process_table()
    out = {}
    for pid in descendants(table):
        try:
            title = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")[0].decode(errors="replace")
        except OSError:
            continue
        f = table.get(pid)
        sec = (int(f[11]) + int(f[12])) / tick if f else 0.0
        out[pid] = (Path(title).name if title.startswith("/") else title, sec)
    return out


class CpuSampler(Sampler):
    """`tree_cpu` every `every_s` in a thread: each process's last CPU reading and its most telling title
    (a Ray worker is ``ray::IDLE`` before and after its task). A process that ends loses at most one period."""

    def __init__(self, every_s: float = 0.5):
        self.every_s, self.seen, self.before = every_s, {}, {}

    def sample(self) -> None:
        for pid, (name, sec) in tree_cpu().items():
            old = self.seen.get(pid)
            if old is not None and (name == "ray::IDLE" or not name.startswith("ray::")):
                name = old[0]
            self.seen[pid] = (name, sec)

    def __enter__(self):
        self.before = tree_cpu()
        return super().__enter__()

    def by_process(self) -> dict[str, float]:
        return cpu_by_process(self.before, self.seen, os.getpid())


def cpu_by_process(before: dict, after: dict, driver_pid: int) -> dict[str, float]:
    """CPU seconds spent between two `tree_cpu` snapshots, summed per kind of process."""
    out: dict[str, float] = {}
    for pid, (name, sec) in after.items():
        used = sec - before.get(pid, (name, 0.0))[1]
        if pid == driver_pid:
            name = "driver (this process)"
        elif name.startswith("ray::"):
            name = name.split(".")[0].replace("Timed", "").replace("Traced", "")
        elif "python" in name:
            name = "ray::IDLE/other python"
        out[name] = round(out.get(name, 0.0) + used, 2)
    return dict(sorted(((k, v) for k, v in out.items() if v >= 0.05), key=lambda kv: -kv[1]))


class Stopwatch:
    """Named wall-clock spans: `with sw("curate"): ...`; repeated names add up."""

    def __init__(self):
        self.seconds: dict[str, float] = {}

    def __call__(self, name: str):
        sw = self

        class _Span:
            def __enter__(self):
                self.t0 = time.perf_counter()

            def __exit__(self, *exc):
                sw.seconds[name] = sw.seconds.get(name, 0.0) + time.perf_counter() - self.t0

        return _Span()
