"""The tiny config's short loss curve on fixed synthetic shards equals the committed one.

Regenerate (only for an intended change): `.venv/bin/python tests/train/make_golden.py`.
"""
import json
from pathlib import Path

import pytest

from train.make_golden import GOLDEN, golden_curve


def test_tiny_config_golden_loss_curve(tmp_path):
    want = json.loads(Path(GOLDEN).read_text())
    got = golden_curve(tmp_path)
    tol = want["tolerance"]  # fp32 on another CPU may differ in the last bits, not more
    assert got["train_loss"] == pytest.approx(want["train_loss"], abs=tol)
    assert got["eval_loss"].keys() == want["eval_loss"].keys()
    for step, loss in want["eval_loss"].items():
        assert got["eval_loss"][step] == pytest.approx(loss, abs=tol)
        assert got["eval_loss_by_modality"][step] == pytest.approx(want["eval_loss_by_modality"][step], abs=tol)
    assert want["train_loss"][-1] < want["train_loss"][0] - 0.3  # the curve it pins does go down


def test_run_folder_has_deterministic_summary_and_curves(tmp_path):
    got = golden_curve(tmp_path)
    run = tmp_path / "run"
    summary = json.loads((run / "summary.json").read_text())
    last = max(got["eval_loss"], key=int)
    assert summary["eval_loss"] == got["eval_loss"][last]
    assert summary["eval_loss_by_modality"] == got["eval_loss_by_modality"][last]
    assert summary["train_loss"] == got["train_loss"][-1]
    train_rows = (run / "train_loss.csv").read_text().splitlines()
    assert train_rows[0] == "step,loss,lr,grad_norm" and len(train_rows) == 1 + len(got["train_loss"])
    assert [float(r.split(",")[1]) for r in train_rows[1:]] == got["train_loss"]
    assert "tokens_per_s" not in (run / "summary.json").read_text()  # nothing that changes run to run
