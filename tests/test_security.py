"""Security rules of the house, checked over the package source (DESIGN: rules of the house).

No pickle anywhere on disk, YAML only through safe loaders, checkpoints loaded
with weights_only=True, no shell built from input, tar members never extracted.
"""
from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

PKG = Path(__file__).resolve().parents[1] / "dataengine"
SOURCES = sorted(PKG.rglob("*.py"))


def _calls(tree: ast.AST):
    for node in ast.walk(tree):
        if isinstance(node, ast.Call):
            yield node, ast.unparse(node.func)


def _kw(call: ast.Call, name: str):
    for kw in call.keywords:
        if kw.arg == name:
            return kw.value
    return None


def _violations(path: Path) -> list[str]:
    text = path.read_text(encoding="utf-8")
    tree = ast.parse(text)
    out = []
    for node in ast.walk(tree):
        if isinstance(node, (ast.Import, ast.ImportFrom)):
            names = [a.name for a in node.names] + ([node.module] if isinstance(node, ast.ImportFrom) else [])
            if any(n and n.split(".")[0] in ("pickle", "cPickle", "dill", "shelve", "marshal") for n in names):
                out.append(f"{node.lineno}: imports a pickle-like module")
    for call, name in _calls(tree):
        where = f"{call.lineno}: {ast.unparse(call)[:100]}"
        if name in ("yaml.load", "yaml.load_all", "yaml.unsafe_load", "yaml.full_load"):
            loader = _kw(call, "Loader") or (call.args[1] if len(call.args) > 1 else None)
            if loader is None or "Safe" not in ast.unparse(loader):
                out.append(f"{where}: yaml.load without SafeLoader (use yaml.safe_load)")
        if name == "torch.load" or name.endswith(".torch.load"):
            wo = _kw(call, "weights_only")
            if not (isinstance(wo, ast.Constant) and wo.value is True):
                out.append(f"{where}: torch.load without weights_only=True")
        if name in ("os.system", "os.popen", "subprocess.getoutput", "subprocess.getstatusoutput", "eval", "exec"):
            out.append(f"{where}: {name} runs a string")
        shell = _kw(call, "shell")
        if shell is not None and not (isinstance(shell, ast.Constant) and shell.value is False):
            out.append(f"{where}: shell=True")
        if name.endswith(("np.load", "numpy.load")):
            ap = _kw(call, "allow_pickle")
            if not (isinstance(ap, ast.Constant) and ap.value is False):
                out.append(f"{where}: np.load without allow_pickle=False")
        if name.endswith((".extractall", ".extract")) and "tar" in ast.unparse(call.func).lower():
            out.append(f"{where}: tar extraction (read members by offset; never write them to disk)")
    return out


@pytest.mark.parametrize("path", SOURCES, ids=lambda p: str(p.relative_to(PKG)))
def test_source_follows_the_security_rules(path):
    assert not _violations(path)


def test_the_checker_catches_each_rule(tmp_path):
    bad = tmp_path / "bad.py"
    # the offending lines are assembled from parts, so this file itself holds none of them
    load, pick = "lo" + "ad", "pic" + "kle"
    bad.write_text(f"import {pick}\nimport os, subprocess, yaml, torch, numpy as np\n"
                   f"yaml.{load}(s)\ntorch.{load}(p)\nos.system(c)\nsubprocess.run(c, shell=True)\n"
                   f"np.{load}(f)\ntarfile.open(p).extractall(d)\n"
                   f"yaml.{load}(s, Loader=yaml.SafeLoader)\ntorch.{load}(p, weights_only=True)\n"
                   f"np.{load}(f, allow_{pick}=False)\nsubprocess.run([c], shell=False)\n")
    found = _violations(bad)
    assert len(found) == 7, found
    assert all(re.match(r"^[1-8]: ", v) for v in found), found
