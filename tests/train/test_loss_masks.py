import numpy as np

from dataengine.train.loader import WorkerStream
from dataengine.train.source import ShardSource
from dataengine.vocab import Vocab


def test_sft_mask_is_the_assistant_turn_by_hand(synth):
    """With loss_on=targets, a chat row predicts exactly its answer, end_turn and eos."""
    vocab = Vocab.load(synth / "vocab.json")
    sp = vocab.special
    src = ShardSource(synth, "train", "parquet", tasks=["chat"], loss_on="targets")
    big = 200  # longer than any chat row: the first row starts with a whole document
    s = WorkerStream(src, context=big, batch_size=1, seed=0, modality_of=vocab.modality_index)
    b = s.next_batch()
    inputs, labels, mask = b["inputs"][0], b["labels"][0], b["mask"][0]
    first_len = int(np.flatnonzero(inputs[1:] == sp("<|bos|>"))[0]) + 1  # first document's length
    doc = inputs[:first_len]
    a = int(np.flatnonzero(doc == sp("<|assistant|>"))[0])
    # hand-built: position t predicts doc[t + 1]; targets are the tokens after <|assistant|> to the end
    expect = np.zeros(big, bool)
    expect[a:first_len - 1] = True
    assert np.array_equal(mask[:first_len], expect[:first_len])
    assert labels[first_len - 2] == sp("<|eos|>") and mask[first_len - 2]
    assert not mask[first_len - 1]                         # eos -> next <|bos|> crosses a boundary
    # the user turn is never a target, in the whole batch
    user = np.flatnonzero(inputs == sp("<|user|>"))
    assert not mask[user].any()


def test_pretraining_mask_covers_every_in_document_label(synth):
    vocab = Vocab.load(synth / "vocab.json")
    src = ShardSource(synth, "train", "parquet", loss_on="all")
    b = WorkerStream(src, context=64, batch_size=4, seed=0).next_batch()
    same = b["doc"][:, 1:] == b["doc"][:, :-1]
    assert np.array_equal(b["mask"][:, :-1], same)
    assert vocab.size > b["labels"].max()
