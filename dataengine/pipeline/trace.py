"""Where did the work run? An opt-in trace of the Ray nodes that ran each stage.

Set `DATAENGINE_TRACE_DIR` in the environment of the Ray nodes (the driver's
environment is enough for a local Ray or a `ray.cluster_utils.Cluster` started
from the same process) and every stage call leaves an empty file
`{stage}-{node_id}` there. The multi-node test uses it to check that both nodes
worked; it costs nothing when the variable is unset.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from dataengine.pipeline.tokenize_stage import TokenizeStage

TRACE_ENV = "DATAENGINE_TRACE_DIR"


def note_node(stage: str) -> None:
    folder = os.environ.get(TRACE_ENV)
    if not folder:
        return
    import ray

    Path(folder).mkdir(parents=True, exist_ok=True)
    (Path(folder) / f"{stage}-{ray.get_runtime_context().get_node_id()}").touch()


def traced_nodes(folder: Path) -> dict[str, set[str]]:
    """{stage: node ids} from a trace folder."""
    out: dict[str, set[str]] = {}
    for p in Path(folder).iterdir():
        stage, _, node = p.name.partition("-")
        out.setdefault(stage, set()).add(node)
    return out


@dataclass(frozen=True)
class TracedDecode:
    """The decode function, noting its node first."""

    fn: object

    def __call__(self, batch, **kwargs):
        note_node("decode")
        return self.fn(batch, **kwargs)


class TracedTokenizeStage(TokenizeStage):
    def __call__(self, batch):
        note_node("tokenize")
        return super().__call__(batch)
