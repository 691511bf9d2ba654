"""The on-disk contract of a sequence row and a reject row, as Arrow schemas.

`schemas/*.arrow.json` in the repository mirror these (language-neutral, for
readers in other languages); a test checks the two never drift apart, and
`python -m dataengine.shards.schema schemas/` rewrites them.
"""
from __future__ import annotations

import json
import sys
from pathlib import Path

import pyarrow as pa

from dataengine.curate.stats import STAT_FIELDS

SPAN = pa.struct([("modality", pa.string()), ("start", pa.int32()), ("end", pa.int32())])
TARGET = pa.struct([("start", pa.int32()), ("end", pa.int32())])
LINEAGE = pa.struct([("path", pa.string()), ("sha256", pa.string()), ("role", pa.string())])
DOCUMENT = pa.struct([("id", pa.string()), ("start", pa.int32()), ("end", pa.int32())])
STATS_TYPE = pa.struct(list(STAT_FIELDS.items()))  # one nullable column per quality stat (curate/stats.py)

SEQUENCE_SCHEMA = pa.schema([
    ("id", pa.string()),              # stable id (hash of source + path [+ record line]); a valid WebDataset key
    ("split", pa.string()),           # train | val (by a hash of id)
    ("source", pa.string()),          # recipe source name
    ("task", pa.string()),            # image_to_caption, caption_to_image, image_instruct, ..., text, chat, packed
    ("kind", pa.string()),            # the sample group's kind: image | video | audio | sensor | text | chat
    ("modalities", pa.list_(pa.string())),
    ("tokens", pa.list_(pa.int32())),  # ids in the shared vocabulary (vocab.json)
    ("num_tokens", pa.int32()),
    ("spans", pa.list_(SPAN)),        # [start, end) of each modality's codes, markers excluded
    ("target_spans", pa.list_(TARGET)),  # [start, end) of token positions that carry loss
    ("side", pa.string()),            # JSON: side information needed to decode each span (grid, scale, ...)
    ("lineage", pa.list_(LINEAGE)),   # input files (path relative to the source root) and their sha256
    ("meta", pa.string()),            # JSON: caption, label, durations, truncation flags, record metadata
    ("content_hash", pa.string()),    # sha256 of the decoded payload: equal for the same content under two names
    ("stats", STATS_TYPE),            # quality stats, computed once at decode/tokenize time (null: not measured)
    ("dup_cluster", pa.string()),     # id of the kept member of this row's duplicate cluster (its own id if unique)
    ("repeat", pa.int32()),           # 0 for the original; k for the k-th up-sampled copy (id suffix -rK)
    ("documents", pa.list_(DOCUMENT)),  # [start, end) of each document; one entry unless compose.pack_length packs
])

REJECT_SCHEMA = pa.schema([
    ("source", pa.string()),
    ("path", pa.string()),      # relative to the source root; `file.jsonl#L3` for one record
    ("stage", pa.string()),     # discover | decode | tokenize | filter | dedup | mixture
    ("reason", pa.string()),    # stable snake_case code, counted in stats.json
    ("detail", pa.string()),    # a sentence for a person
])

SCHEMAS = {"sequence": SEQUENCE_SCHEMA, "reject": REJECT_SCHEMA}


def schema_to_json(schema: pa.Schema) -> list:
    return [_field_json(f) for f in schema]


def _field_json(f: pa.Field) -> dict:
    return {"name": f.name, "type": _type_json(f.type), "nullable": f.nullable}


def _type_json(t: pa.DataType):
    if pa.types.is_list(t):
        return {"list": _type_json(t.value_type)}
    if pa.types.is_struct(t):
        return {"struct": [_field_json(t.field(i)) for i in range(t.num_fields)]}
    return str(t)


def write_schema_files(directory: Path) -> None:
    directory.mkdir(parents=True, exist_ok=True)
    for name, schema in SCHEMAS.items():
        text = json.dumps({"name": name, "fields": schema_to_json(schema)}, indent=1) + "\n"
        (directory / f"{name}.arrow.json").write_text(text)


if __name__ == "__main__":
    write_schema_files(Path(sys.argv[1] if len(sys.argv) > 1 else "schemas"))
