"""The demo as a DVC pipeline: dvc.yaml and params.yaml parse, connect and validate; `dvc` reads them.

Fast checks run in `make test`: every `${...}` resolves in params.yaml, every
param a stage names exists, every tunable in params.yaml reaches a command,
the recipe and trainer overrides validate, every dependency exists or is an
earlier stage's output, outputs do not overlap and are ignored by git, and
`dvc dag` / a real `dvc repro` of the demo-corpus stage work in a scratch git
repository (a second repro does nothing, a forced one reproduces the same
bytes). The whole tiny pipeline, with `dvc exp run --set-param` on a filter
threshold, takes minutes on 2 cores: it runs when DATAENGINE_DVC_E2E=1.
"""
from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from dataengine.recipe import load_recipe
from dataengine.train.config import load_config

ROOT = Path(__file__).resolve().parents[1]
DVC_YAML = yaml.safe_load((ROOT / "dvc.yaml").read_text())
PARAMS = yaml.safe_load((ROOT / "params.yaml").read_text())
STAGES: dict = DVC_YAML["stages"]
VAR = re.compile(r"\$\{([^}]+)\}")
ISSUE_STAGES = {"demo_corpus", "fit_tokenizers", "eval_tokenizers", "build_corpus", "pretrain", "instruction_tune"}


def _lookup(params: dict, dotted: str):
    node = params
    for part in dotted.strip().split("."):
        if not isinstance(node, dict) or part not in node:
            raise KeyError(dotted)
        node = node[part]
    return node


def _interpolate(text: str) -> str:
    """`${a.b}` replaced by its params.yaml value, as DVC writes it (booleans as true/false)."""
    def value(m: re.Match) -> str:
        v = _lookup(PARAMS, m.group(1))
        return str(v).lower() if isinstance(v, bool) else str(v)
    return VAR.sub(value, text)


def _paths(entries) -> list[str]:
    """Paths of a deps/outs/metrics/plots list, whose items are strings or {path: options}."""
    out = []
    for e in entries or []:
        out += [e] if isinstance(e, str) else list(e)
    return [_interpolate(p) for p in out]


def _outs(stage: dict) -> list[str]:
    return _paths(stage.get("outs")) + _paths(stage.get("metrics")) + _paths(stage.get("plots"))


def _inside(path: str, parent: str) -> bool:
    return path == parent or path.startswith(parent.rstrip("/") + "/")


def _leaves(node, prefix: str) -> list[str]:
    if isinstance(node, dict):
        return [leaf for k, v in node.items() for leaf in _leaves(v, f"{prefix}.{k}")]
    return [prefix]


def _dvc() -> str:
    exe = Path(sys.executable).parent / "dvc"
    found = str(exe) if exe.is_file() else shutil.which("dvc")
    assert found, "dvc is not installed: `make env` (pyproject.toml pins it)"
    return found


def _env() -> dict:
    return {**os.environ, "DVC_NO_ANALYTICS": "1", "RAY_USAGE_STATS_ENABLED": "0",
            "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"}


def _git(repo: Path, *args: str) -> str:
    cmd = ["git", "-c", "user.email=test@example.com", "-c", "user.name=test", *args]
    return subprocess.run(cmd, cwd=repo, check=True, capture_output=True, text=True).stdout


def _scratch_repo(tmp: Path, files: list[str]) -> Path:
    """A git repository holding copies of `files` (paths relative to the checkout) plus the DVC config."""
    repo = tmp / "repo"
    for rel in files + ["dvc.yaml", "params.yaml", ".gitignore", ".dvcignore", ".dvc/config", ".dvc/.gitignore"]:
        src, dst = ROOT / rel, repo / rel
        dst.parent.mkdir(parents=True, exist_ok=True)
        if src.is_dir():
            shutil.copytree(src, dst, ignore=shutil.ignore_patterns("__pycache__"))
        else:
            shutil.copy2(src, dst)
    _git(repo, "init", "-q")
    _git(repo, "add", "-A")
    _git(repo, "commit", "-qm", "scratch")
    return repo


def _run_dvc(repo: Path, *args: str, timeout: int = 600) -> str:
    p = subprocess.run([_dvc(), *args], cwd=repo, env=_env(), capture_output=True, text=True, timeout=timeout)
    assert p.returncode == 0, f"dvc {' '.join(args)} failed:\n{p.stdout[-3000:]}\n{p.stderr[-3000:]}"
    return p.stdout + p.stderr


def _ran(log: str) -> set[str]:
    return set(re.findall(r"Running stage '([^']+)'", log))


def test_stages_cover_the_demo_and_interpolations_resolve():
    assert ISSUE_STAGES <= set(STAGES), f"missing stages: {ISSUE_STAGES - set(STAGES)}"
    for name, stage in STAGES.items():
        assert stage.get("cmd"), f"stage {name} has no cmd"
        assert _outs(stage), f"stage {name} declares no outputs: DVC could never skip it"
        for expr in VAR.findall(yaml.safe_dump(stage)):
            value = _lookup(PARAMS, expr)  # KeyError names the missing param
            assert isinstance(value, (str, int, float, bool)), f"${{{expr}}} in stage {name} is not a scalar"


def test_declared_params_exist_and_reach_the_command():
    for name, stage in STAGES.items():
        for entry in stage.get("params", []):
            if isinstance(entry, str):  # a params.yaml key: every leaf under it must flow into the command
                section = _lookup(PARAMS, entry)
                for leaf in _leaves(section, entry):
                    assert "${" + leaf + "}" in stage["cmd"], f"{name}: params.yaml {leaf} never reaches its cmd"
                continue
            for file, keys in entry.items():
                data = yaml.safe_load((ROOT / file).read_text())
                for key in keys or []:
                    _lookup(data, key)
    used = {expr.split(".")[0] for s in STAGES.values() for expr in VAR.findall(s["cmd"])}
    declared = {e for s in STAGES.values() for e in s.get("params", []) if isinstance(e, str)}
    assert used <= declared, f"params used in commands but not declared as stage params: {used - declared}"
    assert set(PARAMS) <= used, f"params.yaml sections no stage uses: {set(PARAMS) - used}"


def _overrides(stage: str) -> list[str]:
    return re.findall(r"--set (\S+)", _interpolate(STAGES[stage]["cmd"]))


def test_overrides_validate_against_the_recipe_and_trainer_configs():
    sets = _overrides("build_corpus")
    assert sets and all(s.startswith("curate.") for s in sets)
    recipe = load_recipe(ROOT / "pipelines" / "demo.yaml", overrides=sets)  # a typo here raises RecipeError
    assert recipe.curate.mixture.policy == PARAMS["curate"]["mixture"]["policy"]
    for stage, config in (("pretrain", "tiny.yaml"), ("instruction_tune", "sft.yaml")):
        cfg = load_config(ROOT / "trainer" / config, _overrides(stage))
        assert cfg.run.steps == PARAMS[stage]["steps"]


def test_deps_exist_or_come_from_an_earlier_stage():
    producers = {out: name for name, stage in STAGES.items() for out in _outs(stage)}
    edges: dict[str, set[str]] = {name: set() for name in STAGES}
    for name, stage in STAGES.items():
        for dep in _paths(stage.get("deps")):
            owner = [producers[o] for o in producers if _inside(dep, o)]
            if owner:
                assert owner[0] != name, f"{name} depends on its own output {dep}"
                edges[name].add(owner[0])
            else:
                assert (ROOT / dep).exists(), f"{name}: dependency {dep} neither exists nor is a stage output"
    order, todo = [], dict(edges)
    while todo:  # Kahn: every stage must come after the stages that produce its inputs
        ready = [n for n, before in todo.items() if before <= set(order)]
        assert ready, f"the stages form a cycle: {sorted(todo)}"
        order += sorted(ready)
        for n in ready:
            del todo[n]
    assert order.index("fit_tokenizers") < order.index("build_corpus") < order.index("pretrain") \
        < order.index("instruction_tune")


def test_outputs_do_not_overlap_are_gitignored_and_cover_top_level_metrics_and_plots():
    outs = [o for stage in STAGES.values() for o in _outs(stage)]
    assert len(outs) == len(set(outs))
    for a in outs:
        for b in outs:
            assert a == b or not _inside(a, b), f"output {a} lies inside output {b}: DVC refuses overlaps"
    if (ROOT / ".git").exists():
        ignored = subprocess.run(["git", "check-ignore", *outs], cwd=ROOT, capture_output=True, text=True).stdout
        assert set(ignored.split()) == set(outs), "outputs must be git-ignored: " + str(set(outs) - set(ignored.split()))
    top = list(DVC_YAML.get("metrics", []))
    for plot in DVC_YAML.get("plots", []):
        if isinstance(plot, str):
            top.append(plot)
        else:
            for spec in plot.values():
                top += list(spec["y"]) if isinstance(spec.get("y"), dict) else []
    assert top, "no top-level metrics or plots"
    for path in top:
        assert any(_inside(path, o) for o in outs), f"{path} (metrics/plots) is not inside any stage output"


def test_dvc_config_is_commit_ready():
    config = (ROOT / ".dvc" / "config").read_text()
    assert "analytics = false" in config
    urls = re.findall(r"url\s*=\s*(\S+)", config)
    assert not [u for u in urls if u.startswith("/") or re.match(r"^[A-Za-z]:", u)], \
        f"absolute remote paths in .dvc/config: {urls}; add remotes with a relative path or --local"
    assert {"/tmp", "/cache", "/config.local"} <= set((ROOT / ".dvc" / ".gitignore").read_text().split())


def test_dvc_dag_reads_the_pipeline(tmp_path):
    repo = _scratch_repo(tmp_path, ["pipelines/demo.yaml"])
    out = _run_dvc(repo, "dag", "--md")
    for name in STAGES:
        assert name in out
    assert "build_corpus" in _run_dvc(repo, "dag", "--md", "pretrain")


def test_repro_twice_does_nothing_and_a_forced_rerun_gives_the_same_bytes(tmp_path):
    deps = _paths(STAGES["demo_corpus"]["deps"])
    repo = _scratch_repo(tmp_path, deps)
    assert _ran(_run_dvc(repo, "repro", "demo_corpus")) == {"demo_corpus"}
    lock = (repo / "dvc.lock").read_text()
    again = _run_dvc(repo, "repro", "demo_corpus")
    assert not _ran(again) and "didn't change" in again
    assert _ran(_run_dvc(repo, "repro", "--force", "demo_corpus")) == {"demo_corpus"}
    assert (repo / "dvc.lock").read_text() == lock  # same md5 for every output: downstream stages would skip


@pytest.mark.skipif(os.environ.get("DATAENGINE_DVC_E2E") != "1",
                    reason="the whole tiny pipeline takes minutes on 2 cores; set DATAENGINE_DVC_E2E=1")
def test_tiny_pipeline_repro_then_exp_run_on_a_filter_threshold(tmp_path):
    from corpus_factory import TINY_TOKENIZERS

    outs = [o for s in STAGES.values() for o in _outs(s)]
    files = sorted({d for s in STAGES.values() for d in _paths(s.get("deps"))
                    if not any(_inside(d, o) for o in outs)} | {"pipelines/demo.yaml"})
    repo = _scratch_repo(tmp_path, files)
    recipe = yaml.safe_load((repo / "pipelines/demo.yaml").read_text())
    recipe.update(tokenizers=TINY_TOKENIZERS, fit={"max_items": 40})
    recipe["execution"].update(tokenize_num_cpus=0.5)
    (repo / "pipelines/demo.yaml").write_text(yaml.safe_dump(recipe, sort_keys=False))
    params = yaml.safe_load((repo / "params.yaml").read_text())
    params["pretrain"]["steps"], params["instruction_tune"]["steps"] = 4, 2
    params["decode_samples"]["n"], params["generate"]["max_new"] = 2, 8
    (repo / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    for cfg in ("trainer/tiny.yaml", "trainer/sft.yaml"):
        text = (repo / cfg).read_text()
        for key, value in (("eval_every", 2), ("checkpoint_every", 2), ("eval_batches", 1), ("context", 64)):
            text = re.sub(rf"{key}: \d+", f"{key}: {value}", text)
        (repo / cfg).write_text(text)
    dvc_yaml = (repo / "dvc.yaml").read_text()  # a small demo corpus (the CLI writes the full one)
    small = ("python -c \"from pathlib import Path; from dataengine.democorpus import write_demo_corpus; "
             "write_demo_corpus(Path('data/demo-corpus'), seed=${corpus.seed}, scale=0.08)\"")
    dvc_yaml = re.sub(r"dataengine demo-corpus data/demo-corpus [^\n]*", lambda _: small, dvc_yaml)
    (repo / "dvc.yaml").write_text(dvc_yaml)
    _git(repo, "commit", "-qam", "tiny variant")

    assert _ran(_run_dvc(repo, "repro", timeout=1800)) == set(STAGES)
    again = _run_dvc(repo, "repro")
    assert not _ran(again) and "up to date" in again
    _git(repo, "add", "dvc.lock")
    _git(repo, "commit", "-qm", "lock")
    log = _run_dvc(repo, "exp", "run", "--set-param", "curate.filters.text_chars.min=60", timeout=1800)
    ran = _ran(log) | set(re.findall(r"Stage '([^']+)' is cached", log))
    assert ran >= {"build_corpus", "pretrain", "report"}
    assert not ran & {"demo_corpus", "fit_tokenizers", "eval_tokenizers"}, ran
    assert "reusing" in log  # the candidates cache persisted: only curation ran again
