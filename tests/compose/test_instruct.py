"""Instruction and chat sequences: target spans checked against the rendered text."""
import numpy as np
import pytest

from dataengine.compose.instruct import compose_instruct, compose_task
from dataengine.compose.sequence import compose_chat
from dataengine.compose.tasks import KIND_TASKS, task_needs
from dataengine.vocab import NUM_SPECIALS

MEDIA = {
    "image": [("image", "image", np.arange(4) % 50, {"grid": [2, 2]})],
    "audio": [("audio", "audio", np.arange(6) % 40, {})],
    "video": [("video", "video", np.arange(8) % 50, {"frames": 2, "grid": [2, 2]}),
              ("audio", "audio", np.arange(5) % 40, {})],
    "sensor": [("sensor", "sensor", np.arange(6) % 16, {"channels": 2, "scale": [1, 1]})],
}


def enc(bpe, s: str) -> np.ndarray:
    return np.asarray(bpe.encode(s)[0])


def text_of(vocab, bpe, ids: np.ndarray) -> str:
    """The text tokens among `ids`, decoded (specials and media dropped)."""
    ids = np.asarray(ids)
    ids = ids[vocab.modality_of(ids) == "text"] if len(ids) else ids
    return bpe.decode(vocab.to_local("text", ids), {})


def target_mask(b) -> np.ndarray:
    mask = np.zeros(b.length, bool)
    for s in b.targets:
        mask[s["start"]:s["end"]] = True
    return mask


@pytest.mark.parametrize("kind, template, answer", [
    ("image", "Describe this image.", "A red ball lies on the green grass."),
    ("audio", "Transcribe this audio.", "walking, running, standing"),
    ("video", "What happens in this video?", "A person waves at the camera. Café 🎉"),
    ("sensor", "Which activity is this recording?", "walking"),
])
def test_instruct_targets_are_exactly_the_assistant_answer(text_vocab, bpe, kind, template, answer):
    vocab, sp = text_vocab, text_vocab.special
    b, task = compose_task(vocab, kind, "instruct", MEDIA[kind], enc(bpe, answer), enc(bpe, template))
    t = b.tokens()
    assert task == f"{kind}_instruct"
    (tgt,) = b.targets
    # the target span decodes to the answer, then <|end_turn|> <|eos|>, and ends the sequence
    assert text_of(vocab, bpe, t[tgt["start"]:tgt["end"]]) == answer
    assert t[tgt["end"] - 2:tgt["end"]].tolist() == [sp("<|end_turn|>"), sp("<|eos|>")] and tgt["end"] == len(t)
    assert t[tgt["start"] - 1] == sp("<|assistant|>")
    # everything else is the user turn: its text is the template, and all media sit there
    rest = t[~target_mask(b)]
    assert text_of(vocab, bpe, rest) == template
    assert rest[:2].tolist() == [sp("<|bos|>"), sp("<|user|>")]
    media = [s for s in b.spans if s["modality"] != "text"]
    assert [s["modality"] for s in media] == [p[0] for p in MEDIA[kind]]
    assert all(s["end"] <= tgt["start"] for s in media)
    mods = vocab.modality_of(t[target_mask(b)])
    assert set(mods) <= {"text", "special"}


def test_chat_targets_decode_to_each_assistant_turn(text_vocab, bpe):
    vocab = text_vocab
    msgs = [("system", "Which activity is this recording?"), ("user", "Describe this image."),
            ("assistant", "A red ball lies on the green grass."), ("user", "What happens in this video?"),
            ("assistant", "A person waves at the camera.")]
    b = compose_chat(vocab, [(r, enc(bpe, c)) for r, c in msgs])
    t = b.tokens()
    assert [text_of(vocab, bpe, t[s["start"]:s["end"]]) for s in b.targets] == [c for r, c in msgs if r == "assistant"]
    assert text_of(vocab, bpe, t[~target_mask(b)]) == "".join(c for r, c in msgs if r != "assistant")
    assert t[-1] == vocab.special("<|eos|>") and b.targets[-1]["end"] == len(t)


@pytest.mark.parametrize("kind", ["image", "audio", "video", "sensor"])
def test_every_task_of_a_kind_renders_in_its_order(text_vocab, bpe, kind):
    cap = enc(bpe, "A red ball.")
    media = [p[0] for p in MEDIA[kind]]
    # tasks that need an aligned modality (image_to_depth) are run in tests/modalities/test_depth_pipeline.py
    for task in (t for t in KIND_TASKS[kind] if task_needs(kind, t) <= {"text"}):
        b, label = compose_task(text_vocab, kind, task, MEDIA[kind], cap, enc(bpe, "Describe this image."))
        order = [s["modality"] for s in b.spans]
        if task.endswith(f"_to_{kind}"):          # text -> media
            assert label == task and order == ["text"] + media
        elif task.startswith(f"{kind}_to_"):      # media -> text
            assert label == task and order == media + ["text"]
        elif task == kind:                        # unconditional: the caption is not used
            assert label == kind and order == media
        else:
            assert label == f"{kind}_instruct" and order == ["text"] + media + ["text"]
        assert b.tokens()[-1] == text_vocab.special("<|eos|>")
        assert all(text_vocab.modality_of(b.tokens()[s["start"]:s["end"]])[0] == s["modality"] for s in b.spans)


def test_paired_tasks_refuse_items_without_text(text_vocab, bpe):
    with pytest.raises(ValueError, match="needs the item's text"):
        compose_task(text_vocab, "image", "caption_to_image", MEDIA["image"], None)
    with pytest.raises(ValueError, match="not a image task"):
        compose_task(text_vocab, "image", "audio_to_transcript", MEDIA["image"], enc(bpe, "x"))
    b, label = compose_task(text_vocab, "image", "image", MEDIA["image"], None)
    assert label == "image"


def test_instruct_without_media_is_a_plain_exchange(text_vocab, bpe):
    b = compose_instruct(text_vocab, enc(bpe, "Describe this image."), [], enc(bpe, "walking"))
    t = b.tokens()
    assert (t < NUM_SPECIALS).sum() == 6  # bos user end_turn assistant end_turn eos
