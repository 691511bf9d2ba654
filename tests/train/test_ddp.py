"""DDP on CPU: two gloo processes, each with its own loader slice, and an exact resume across both ranks."""
import os
import socket

import torch.distributed as dist
import torch.multiprocessing as mp

from dataengine.train.config import load_config
from dataengine.train.loop import train
from dataengine.train.metrics import read_metrics
from train.synth_shards import tiny_overrides


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _rank_main(rank, world, port, shards, root):
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank), WORLD_SIZE=str(world),
                      LOCAL_RANK=str(rank))
    quiet = {"log": lambda *_: None}
    train(load_config("trainer/tiny.yaml", tiny_overrides(root / "full", **{"run.steps": 4})), shards, **quiet)
    train(load_config("trainer/tiny.yaml", tiny_overrides(root / "part", **{"run.steps": 4, "run.stop_after": 2})),
          shards, **quiet)
    train(load_config("trainer/tiny.yaml", tiny_overrides(root / "part", **{"run.steps": 4})), shards, resume=True,
          **quiet)
    dist.destroy_process_group()


def test_ddp_two_cpu_processes_train_and_resume_exactly(synth, tmp_path):
    mp.start_processes(_rank_main, args=(2, _free_port(), synth, tmp_path), nprocs=2, start_method="fork")
    ck = tmp_path / "full" / "checkpoints" / "step-000004"
    assert {p.name for p in ck.iterdir()} >= {"rank-0.json", "rank-1.json", "model.safetensors"}
    import json
    r0, r1 = (json.loads((ck / f"rank-{r}.json").read_text())["loader"] for r in (0, 1))
    assert (r0["rank"], r1["rank"], r0["world"]) == (0, 1, 2)
    timing = {"tokens_per_s", "mfu", "peak_tflops", "peak_source"}
    curve = lambda run: [{k: v for k, v in r.items() if k not in timing}  # noqa: E731
                         for r in read_metrics(tmp_path / run / "metrics.jsonl")]
    full = curve("full")
    assert [r["step"] for r in full if r["kind"] == "train"] == [1, 2, 3, 4]  # rank 0 alone writes metrics
    assert full == curve("part")
