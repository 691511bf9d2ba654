import json

from safetensors.torch import load_file

from dataengine.train.config import load_config
from dataengine.train.loop import train
from dataengine.train.metrics import read_metrics
from train.synth_shards import tiny_overrides

TIMING = {"tokens_per_s", "mfu", "peak_tflops", "peak_source"}  # wall-clock numbers: the only ones that may differ


def _curve(run):
    return [{k: v for k, v in r.items() if k not in TIMING} for r in read_metrics(run / "metrics.jsonl")]


def test_stop_and_resume_equals_uninterrupted(synth, tmp_path):
    extra = {"data.workers": 2, "data.loss_on": "targets"}  # worker processes + prefetch: the hard case
    full = train(load_config("trainer/tiny.yaml", tiny_overrides(tmp_path / "full", **extra)), synth, log=lambda *_: None)
    train(load_config("trainer/tiny.yaml", tiny_overrides(tmp_path / "part", **extra, **{"run.stop_after": 4})),
          synth, log=lambda *_: None)
    part_ckpt = tmp_path / "part" / "checkpoints"
    assert (part_ckpt / "latest").read_text().strip() == "step-000004"
    assert sorted(p.name for p in (part_ckpt / "step-000004").iterdir()) == [
        "model.safetensors", "optim.safetensors", "rank-0.json", "state.json"]  # no pickle anywhere
    resumed = train(load_config("trainer/tiny.yaml", tiny_overrides(tmp_path / "part", **extra)), synth,
                    resume=True, log=lambda *_: None)
    a, b = _curve(tmp_path / "full"), _curve(tmp_path / "part")
    assert [r["step"] for r in a if r["kind"] == "train"] == list(range(1, 7))
    assert a == b                                   # every logged loss, to the last digit
    assert full["loss"] == resumed["loss"]
    wa = load_file(tmp_path / "full" / "checkpoints" / "step-000006" / "model.safetensors")
    wb = load_file(tmp_path / "part" / "checkpoints" / "step-000006" / "model.safetensors")
    assert wa.keys() == wb.keys() and all((wa[k] == wb[k]).all() for k in wa)
    state = json.loads((tmp_path / "part" / "checkpoints" / "step-000006" / "state.json").read_text())
    assert state["step"] == 6 and len(state["fingerprint"]) == 64
    assert (tmp_path / "full" / "loss_curve.png").stat().st_size > 1000
