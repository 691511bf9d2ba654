import numpy as np
import pytest

from dataengine import modalities
from dataengine.compose.instruct import compose_task
from dataengine.compose.sequence import compose_chat, split_rows
from dataengine.vocab import Vocab

from test_vocab import FakeTok


def compose_media(vocab, kind, parts, text_ids, text_first=False):
    """The pretraining task an item with (or without) its text gets, through the public compose_task."""
    paired = modalities.get(kind).paired_text
    if text_ids is None or not len(text_ids):
        task = kind
    else:
        task = f"{paired}_to_{kind}" if text_first else f"{kind}_to_{paired}"
    return compose_task(vocab, kind, task, parts, text_ids)


@pytest.fixture
def vocab():
    return Vocab.build({"text": FakeTok("bpe", "text", [100]), "image": FakeTok("fsq_image", "image", [50]),
                        "video": FakeTok("frames", "video", [50]), "sensor": FakeTok("sensor_bins", "sensor", [16])})


def test_image_caption_layout_and_spans(vocab):
    img, cap = np.arange(4), np.array([5, 6])
    b, task = compose_media(vocab, "image", [("image", "image", img, {"grid": [2, 2]})], cap)
    t = b.tokens()
    sp = vocab.special
    assert task == "image_to_caption"
    assert t[0] == sp("<|bos|>") and t[1] == sp("<|image_start|>") and t[-1] == sp("<|eos|>")
    img_span, txt_span = b.spans
    np.testing.assert_array_equal(vocab.to_local("image", t[img_span["start"]:img_span["end"]]), img)
    np.testing.assert_array_equal(vocab.to_local("text", t[txt_span["start"]:txt_span["end"]]), cap)
    assert t[img_span["end"]] == sp("<|image_end|>") and t[txt_span["start"] - 1] == sp("<|text_start|>")
    assert b.targets == [{"start": 0, "end": len(t)}]
    assert b.side[0]["grid"] == [2, 2] and b.side[0]["tokenizer"] == "image"


def test_video_frames_and_sensor_rows_are_separated_and_split_back(vocab):
    frames = np.arange(3 * 4) % 50                     # 3 frames of 2x2 codes
    b, task = compose_media(vocab, "video", [("video", "video", frames, {"frames": 3, "grid": [2, 2]})], None)
    t = b.tokens()
    span = b.spans[0]
    ids = t[span["start"]:span["end"]]
    rows = split_rows(ids, vocab.special("<|frame_sep|>"))
    assert task == "video" and len(rows) == 3 and all(len(r) == 4 for r in rows)
    np.testing.assert_array_equal(vocab.to_local("video", np.concatenate(rows)), frames)

    values = np.arange(5 * 2) % 16                     # 5 time steps x 2 channels
    b, task = compose_media(vocab, "sensor", [("sensor", "sensor", values, {"channels": 2, "scale": [1, 1]})],
                            np.array([1]))
    span = b.spans[0]
    ids = b.tokens()[span["start"]:span["end"]]
    assert (ids == vocab.special("<|row_sep|>")).sum() == 4
    assert task == "sensor_to_label"


def test_temporal_video_is_separated_per_latent_frame(vocab):
    codes = np.arange(2 * 4) % 50                      # 5 frames -> 2 latent frames of 2x2 codes
    side = {"frames": 5, "grid": [2, 2], "latent_frames": 2}
    b, _ = compose_media(vocab, "video", [("video", "video", codes, side)], None)
    span = b.spans[0]
    rows = split_rows(b.tokens()[span["start"]:span["end"]], vocab.special("<|frame_sep|>"))
    assert [len(r) for r in rows] == [4, 4] and b.side[0]["latent_frames"] == 2


def test_chat_targets_cover_only_assistant_turns(vocab):
    turns = [("system", np.array([1])), ("user", np.array([2, 3])), ("assistant", np.array([4, 5, 6])),
             ("user", np.array([7])), ("assistant", np.array([8]))]
    b = compose_chat(vocab, turns)
    t = b.tokens()
    sp = vocab.special
    mask = np.zeros(len(t), bool)
    for s in b.targets:
        mask[s["start"]:s["end"]] = True
    # targets: assistant content + <|end_turn|>, and the final <|eos|>
    expected = [vocab.to_global("text", np.array([4, 5, 6])).tolist() + [sp("<|end_turn|>")],
                vocab.to_global("text", np.array([8])).tolist() + [sp("<|end_turn|>"), sp("<|eos|>")]]
    assert [t[s["start"]:s["end"]].tolist() for s in b.targets] == expected
    assert not mask[: np.flatnonzero(t == sp("<|assistant|>"))[0] + 1].any()
    assert t[-1] == sp("<|eos|>")


def test_caption_to_image_puts_the_text_span_first(vocab):
    img, cap = np.arange(4), np.array([5, 6, 7])
    b, task = compose_media(vocab, "image", [("image", "image", img, {"grid": [2, 2]})], cap, text_first=True)
    t = b.tokens()
    sp = vocab.special
    assert task == "caption_to_image"
    assert [s["modality"] for s in b.spans] == ["text", "image"]
    txt, im = b.spans
    assert t[1] == sp("<|text_start|>") and t[txt["end"]] == sp("<|text_end|>")
    assert t[im["start"] - 1] == sp("<|image_start|>") and t[im["end"]] == sp("<|image_end|>")
    assert txt["end"] < im["start"]
    np.testing.assert_array_equal(vocab.to_local("text", t[txt["start"]:txt["end"]]), cap)
    np.testing.assert_array_equal(vocab.to_local("image", t[im["start"]:im["end"]]), img)
    assert b.targets == [{"start": 0, "end": len(t)}]  # pretraining: loss everywhere


def test_uncaptioned_media_is_unconditional(vocab):
    b, task = compose_media(vocab, "image", [("image", "image", np.arange(4), {})], np.array([], np.int64))
    assert task == "image" and [s["modality"] for s in b.spans] == ["image"]


def test_side_entries_are_parallel_to_spans(vocab):
    """inspect zips spans with side: every span, chat turns included, has its side entry."""
    b = compose_chat(vocab, [("user", np.array([1, 2])), ("assistant", np.array([3]))])
    assert len(b.side) == len(b.spans) == 2 and all(d["tokenizer"] == "text" for d in b.side)
    b, _ = compose_media(vocab, "image", [("image", "image", np.arange(4), {})], np.array([1]), text_first=True)
    assert [d["modality"] for d in b.side] == [s["modality"] for s in b.spans] == ["text", "image"]


def test_codes_outside_a_range_are_refused(vocab):
    with pytest.raises(ValueError):
        compose_media(vocab, "image", [("image", "image", np.array([50]), {})], None)
