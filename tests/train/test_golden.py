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
