import numpy as np
import pytest

from dataengine.train.loader import WorkerStream, epoch_order
from dataengine.train.pack import PAD_DOC, Piece, build_row, document_positions, inputs_and_labels, target_mask
from dataengine.train.source import ShardSource
from dataengine.vocab import Vocab


def piece(tokens, start_pos=0, target=None, new_doc=True):
    tokens = np.asarray(tokens, np.int32)
    pos = np.arange(start_pos, start_pos + len(tokens))
    start = np.zeros(len(tokens), bool)
    start[0] = new_doc and start_pos == 0
    tgt = np.ones(len(tokens), bool) if target is None else np.asarray(target, bool)
    return Piece(tokens, tgt, pos, start)


def test_row_positions_docs_and_labels_by_hand():
    row = build_row([piece([7, 8, 9], start_pos=5), piece([1, 2]), piece([1, 3, 4])], 9)
    assert row["pos"].tolist() == [5, 6, 7, 0, 1, 0, 1, 2, 0]
    assert row["doc"].tolist() == [0, 0, 0, 1, 1, 2, 2, 2, PAD_DOC]
    io = inputs_and_labels(row)
    assert io["inputs"].tolist() == [7, 8, 9, 1, 2, 1, 3, 4]
    assert io["labels"].tolist() == [8, 9, 1, 2, 1, 3, 4, 0]
    # no label crosses a document boundary, the padding is never a label
    assert io["mask"].tolist() == [True, True, False, True, False, True, True, False]


def test_target_mask_matches_hand_built():
    lengths = np.array([5, 0, 4])
    mask = target_mask(lengths, np.array([0, 0, 2, 2]), np.array([0, 3, 1, 3]), np.array([2, 9, 2, 3]))
    expect = [True, True, False, True, True] + [False, True, False, False]
    assert mask.tolist() == expect


def test_pre_packed_rows_restart_positions():
    pos, start = document_positions(7, np.array([0, 3, 5]))
    assert pos.tolist() == [0, 1, 2, 0, 1, 0, 1]
    assert start.tolist() == [True, False, False, True, False, True, False]


@pytest.mark.parametrize("seed", [0, 1])
def test_stream_positions_reset_at_every_document(synth, seed):
    vocab = Vocab.load(synth / "vocab.json")
    bos = vocab.special("<|bos|>")
    src = ShardSource(synth, "train", "parquet")
    s = WorkerStream(src, context=48, batch_size=4, seed=seed, modality_of=vocab.modality_index)
    for _ in range(40):  # more than an epoch: crosses the epoch boundary too
        b = s.next_batch()
        inputs, pos, doc, labels, mask = b["inputs"], b["pos"], b["doc"], b["labels"], b["mask"]
        # every document starts with <|bos|> at position 0, and only there
        assert np.array_equal(pos == 0, inputs == bos)
        # inside a document fragment positions count up by one; a new doc id starts a new fragment
        same = doc[:, 1:] == doc[:, :-1]
        assert np.all((pos[:, 1:] - pos[:, :-1])[same] == 1)
        assert np.all(np.diff(doc, axis=1) >= 0)
        # nothing predicts across a boundary: <|bos|> is never a target, every masked label is in-document
        assert not np.any(mask & (labels == bos))
        assert np.all(mask[:, :-1] <= same)
    assert s.state["epoch"] >= 1


def test_pre_packed_shard_rows_are_split_into_documents(tmp_path):
    """Rows packed by the engine (a `documents` column) keep their document boundaries in the trainer."""
    import json

    import pyarrow as pa
    import pyarrow.parquet as pq

    (tmp_path / "parquet").mkdir()
    doc_t = pa.list_(pa.struct([("id", pa.string()), ("start", pa.int32()), ("end", pa.int32())]))
    t = pa.table({"tokens": pa.array([[1, 70, 71, 2, 1, 72, 2], [1, 73, 2]], pa.list_(pa.int32())),
                  "documents": pa.array([[{"id": "a", "start": 0, "end": 4}, {"id": "b", "start": 4, "end": 7}],
                                         [{"id": "c", "start": 0, "end": 3}]], doc_t)})
    pq.write_table(t, tmp_path / "parquet" / "train-000000.parquet")
    (tmp_path / "manifest.json").write_text(json.dumps({"shards": [
        {"path": "parquet/train-000000.parquet", "format": "parquet", "split": "train", "sequences": 2}]}))
    src = ShardSource(tmp_path, "train", "parquet")
    tokens, target, pos, start = src.document(0)
    assert pos.tolist() == [0, 1, 2, 3, 0, 1, 2] and start.tolist() == [1, 0, 0, 0, 1, 0, 0]
    row = inputs_and_labels(WorkerStream(src, context=9, batch_size=1, seed=0).next_row())
    first = int(epoch_order(2, 0, 0)[0])
    expect = [0, 0, 0, 0, 1, 1, 1, 2, 2] if first == 0 else [0, 0, 0, 1, 1, 1, 1, 2, 2]
    assert row["doc"].tolist() == expect
    assert not row["mask"][np.flatnonzero(row["labels"] == 1)].any()  # never predict a document's <|bos|>
