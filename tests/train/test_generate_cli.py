import json

import numpy as np
import pytest

from dataengine.train.cli import main
from dataengine.train.generate import build_prompt, load_model, split_spans
from dataengine.train.metrics import read_metrics
from train.synth_shards import synthetic_vocab, tiny_overrides


class FakeText:
    def encode(self, text):
        return (np.arange(len(text.split())) % 90,)


def test_generated_media_spans_are_cut_to_what_the_tokenizers_decode():
    vocab = synthetic_vocab()
    sp = vocab.special
    img_lo, _ = vocab.tokenizer_range("image")
    sen_lo, _ = vocab.tokenizer_range("sensor")
    text_id = vocab.tokenizer_range("text")[0]
    seq = np.array([sp("<|bos|>"), sp("<|image_start|>"), *range(img_lo, img_lo + 10), text_id, sp("<|image_end|>"),
                    sp("<|sensor_start|>"), *[sen_lo + 1] * 7, sp("<|row_sep|>"), sp("<|sensor_end|>"), sp("<|eos|>")])
    templates = {"image": {"tokenizer": "image", "grid": [4, 4]}, "sensor": {"tokenizer": "sensor", "channels": 3}}
    row = split_spans(seq, vocab, {}, templates)
    sides = json.loads(row["side"])
    assert [s["modality"] for s in row["spans"]] == ["image", "sensor"]
    img, sen = row["spans"]
    assert img["end"] - img["start"] == 16            # 10 generated codes repeated to fill the 4x4 grid
    assert all(img_lo <= t < img_lo + 64 for t in row["tokens"][img["start"]:img["end"]])  # the stray text id is gone
    assert sen["end"] - sen["start"] == 6             # whole rows of 3 channels only
    assert sides[1]["scale"] == [1.0, 1.0, 1.0] and sides[0]["grid"] == [4, 4]


def test_prompts_follow_the_sequence_formats():
    vocab, sp = synthetic_vocab(), synthetic_vocab().special
    toks = {"text": FakeText()}
    plain = build_prompt(vocab, toks, text="a b c", media=None, chat=False, then=None)
    assert plain[:2].tolist() == [sp("<|bos|>"), sp("<|text_start|>")] and len(plain) == 5
    chat = build_prompt(vocab, toks, text="a b", media=None, chat=True, then=None)
    assert chat.tolist()[-2:] == [sp("<|end_turn|>"), sp("<|assistant|>")] and chat[1] == sp("<|user|>")
    to_image = build_prompt(vocab, toks, text="a", media=None, chat=False, then="image")
    assert to_image.tolist()[-2:] == [sp("<|text_end|>"), sp("<|image_start|>")]


def test_cli_trains_then_refuses_to_clobber_and_resumes(synth, tmp_path, capsys):
    run = tmp_path / "run"
    args = ["train", "trainer/tiny.yaml", "--shards", str(synth)]
    sets = [a for kv in tiny_overrides(run, **{"run.steps": 4, "run.stop_after": 2}) for a in ("--set", kv)]
    assert main(args + sets) == 0
    assert main(args + sets) == 2                     # a second start would overwrite: refused with a fix
    assert "--resume" in capsys.readouterr().err
    sets = [a for kv in tiny_overrides(run, **{"run.steps": 4}) for a in ("--set", kv)]
    assert main(args + sets + ["--resume"]) == 0
    assert [r["step"] for r in read_metrics(run / "metrics.jsonl") if r["kind"] == "train"] == [1, 2, 3, 4]
    model, state = load_model(run)
    assert state["step"] == 4 and model.cfg.vocab_size == synthetic_vocab().size
    with pytest.raises(SystemExit):
        main(["train", "trainer/tiny.yaml"])          # --shards is required
    assert main(["train", "trainer/tiny.yaml", "--shards", str(synth), "--set", "model.d_modle=3"]) == 2
