"""The tokenize + compose stage on hand-made decoded rows (no Ray): tasks, stats, recon, rejects."""
import json

import numpy as np
import pyarrow as pa
import pytest
from safetensors.numpy import save as st_save

from dataengine.compose.tasks import DEFAULT_TEMPLATES
from dataengine.pipeline import tokenize_stage as ts
from dataengine.pipeline.tokenize_stage import RESULT_SCHEMA, TokenizeStage, load_tokenizers, recon_mse
from dataengine.tokenize.audio_mel_fsq import MelFSQTokenizer
from dataengine.tokenize.image_fsq import FSQImageTokenizer
from dataengine.tokenize.sensor_bins import SensorBinsTokenizer
from dataengine.tokenize.text_bpe import BPETokenizer
from dataengine.tokenize.video_frames import FramesTokenizer
from dataengine.vocab import Vocab

ROLES = ["audio", "image", "sensor", "text", "video"]
CAPTION = "A red ball lies on the green grass."
TEXTS = [CAPTION, "walking", "Describe this image. Transcribe this audio. What happens in this video?",
         "Which activity is this recording? The quick brown fox jumps over the lazy dog."] * 3


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    """Untrained (random-weight) model tokenizers: the stage's wiring, not code quality, is under test."""
    d = tmp_path_factory.mktemp("toks")
    image = FSQImageTokenizer({"size": 32, "downsample": 8, "channels": 16})
    toks = {"text": BPETokenizer.fit(TEXTS, {"vocab_size": 300}, seed=0, log=lambda *_: None), "image": image,
            "video": FramesTokenizer(image, {}), "audio": MelFSQTokenizer({"channels": 16}),
            "sensor": SensorBinsTokenizer({"n_bins": 32})}
    for role, tok in toks.items():
        tok.save(d / role)
    vocab = Vocab.build(load_tokenizers(d, ROLES))
    vocab.save(d / "vocab.json")
    return {"dir": str(d), "vocab_path": str(d / "vocab.json"), "vocab": vocab, "text": toks["text"]}


def row(rid, kind, meta, arrays=None, status="ok", reason=""):
    return {"id": rid, "unit_id": rid, "source": "src", "kind": kind, "status": status, "path": f"{rid}.x",
            "stage": "decode" if status != "ok" else "", "reason": reason, "detail": reason,
            "lineage": json.dumps([{"path": f"{rid}.x", "sha256": "0" * 64, "role": "media"}]),
            "meta": json.dumps(meta), "arrays": st_save(arrays) if arrays else b"",
            "content_hash": f"hash-{rid}", "stats": json.dumps({"decoded_stat": len(rid)})}


def batch():
    rng = np.random.default_rng(0)
    img = lambda: rng.integers(0, 255, (32, 32, 3), dtype=np.uint8)  # noqa: E731
    rows = [
        row("img", "image", {"text": CAPTION}, {"image": img()}),
        row("img_nocap", "image", {}, {"image": img()}),
        row("vid", "video", {"text": CAPTION, "frames": 2}, {"frames": np.stack([img(), img()]),
                                                             "audio": rng.normal(size=8000).astype(np.float32)}),
        row("aud", "audio", {"text": "walking"}, {"audio": 0.1 * rng.normal(size=16000).astype(np.float32)}),
        row("sen", "sensor", {"text": "walking", "label": "walking", "channels": ["x", "y"]},
            {"sensor": rng.normal(size=(20, 2)).astype(np.float32)}),
        row("doc", "text", {"text": TEXTS[3]}),
        row("chat", "chat", {"record": {"messages": [{"role": "user", "content": "Describe this image."},
                                                     {"role": "assistant", "content": CAPTION}]}}),
        row("bad_img", "image", {"text": CAPTION}, {"image": np.zeros((5,), np.uint8)}),
        row("rej", "image", {}, status="reject", reason="truncated"),
    ]
    rows[-2]["lineage"] = json.dumps(json.loads(rows[-2]["lineage"]) + [  # the tokenizer fails on it
        {"path": "bad_img.json", "sha256": "1" * 64, "role": "sidecar"},
        {"path": "bad_img.txt", "sha256": "2" * 64, "role": "caption"}])
    return pa.Table.from_pylist(rows)


def only(kind_tasks: dict) -> dict:
    """compose settings where each listed kind gets exactly one task."""
    return {"tasks": {k: {t: 1.0} for k, t in kind_tasks.items()}}


def by_id(table: pa.Table) -> dict:
    return {r["id"]: r for r in table.to_pylist()}


def texts_in(vocab, bpe, tokens) -> str:
    t = np.asarray(tokens)
    t = t[vocab.modality_of(t) == "text"]
    return bpe.decode(vocab.to_local("text", t), {})


def test_every_item_comes_out_once_with_kind_hash_and_task(setup):
    stage = TokenizeStage(setup["dir"], ROLES, setup["vocab_path"])
    out = stage(batch())
    assert out.schema == RESULT_SCHEMA and out.num_rows == batch().num_rows + 2  # bad_img's sidecar, caption
    companions = [(r["path"], r["stage"], r["reason"], r["unit_id"]) for r in out.to_pylist() if r["id"] == ""]
    assert companions == [("bad_img.json", "tokenize", "media_rejected", "bad_img"),
                          ("bad_img.txt", "tokenize", "media_rejected", "bad_img")]  # in exactly one place
    rows = by_id(out)
    assert rows["rej"]["status"] == "reject" and rows["rej"]["reason"] == "truncated"
    assert rows["bad_img"]["status"] == "reject" and rows["bad_img"]["stage"] == "tokenize"
    ok = {k: r for k, r in rows.items() if r["status"] == "ok"}
    assert set(ok) == {"img", "img_nocap", "vid", "aud", "sen", "doc", "chat"}
    for rid, r in ok.items():
        assert r["kind"] == {"img_nocap": "image", "img": "image", "vid": "video", "aud": "audio",
                             "sen": "sensor", "doc": "text", "chat": "chat"}[rid]
        assert r["content_hash"] == f"hash-{rid}"
        assert json.loads(r["meta"])["compose"]["task"] == r["task"]
        assert len(r["tokens"]) == r["num_tokens"] and len(json.loads(r["side"])) == len(r["spans"])
    assert rows["img_nocap"]["task"] == "image"  # no caption: unconditional only
    assert rows["doc"]["task"] == "text" and rows["chat"]["task"] == "chat"
    assert out == TokenizeStage(setup["dir"], ROLES, setup["vocab_path"])(batch())  # deterministic


def test_forced_tasks_render_in_order_and_instruct_targets_are_the_caption(setup):
    vocab, bpe = setup["vocab"], setup["text"]
    gen = by_id(TokenizeStage(setup["dir"], ROLES, setup["vocab_path"], compose=only(
        {"image": "caption_to_image", "video": "caption_to_video", "audio": "transcript_to_audio"}))(batch()))
    assert [s["modality"] for s in gen["img"]["spans"]] == ["text", "image"]
    assert [s["modality"] for s in gen["vid"]["spans"]] == ["text", "video", "audio"]
    assert gen["aud"]["task"] == "transcript_to_audio" and gen["img_nocap"]["task"] == "image"
    und = by_id(TokenizeStage(setup["dir"], ROLES, setup["vocab_path"], compose=only({"video": "video_to_caption"}))(
        batch()))
    assert [s["modality"] for s in und["vid"]["spans"]] == ["video", "audio", "text"]

    cfg = only({k: "instruct" for k in ("image", "video", "audio", "sensor")})
    cfg["templates"] = {"image": ["Describe this image."]}
    ins = by_id(TokenizeStage(setup["dir"], ROLES, setup["vocab_path"], compose=cfg, seed=3)(batch()))
    answers = {"img": CAPTION, "vid": CAPTION, "aud": "walking", "sen": "walking"}
    for rid, answer in answers.items():
        r = ins[rid]
        kind = r["kind"]
        assert r["task"] == f"{kind}_instruct"
        (tgt,) = r["target_spans"]
        toks = np.asarray(r["tokens"])
        assert texts_in(vocab, bpe, toks[tgt["start"]:tgt["end"]]) == answer
        mask = np.zeros(len(toks), bool)
        mask[tgt["start"]:tgt["end"]] = True
        template = json.loads(r["meta"])["compose"]["template"]
        assert template in (["Describe this image."] if kind == "image" else DEFAULT_TEMPLATES[kind])
        assert texts_in(vocab, bpe, toks[~mask]) == template
    assert json.loads(ins["img_nocap"]["meta"])["compose"] == {"task": "image", "template": None}


def test_stats_merge_decoded_and_token_stats_with_recon(setup, monkeypatch):
    calls = {}

    def fake_token_stats(codes, codebook_size, recon_mse):
        calls[len(calls)] = (np.asarray(codes), codebook_size, recon_mse)
        return {"n_codes": int(np.asarray(codes).size), "recon": recon_mse}

    monkeypatch.setattr(ts, "token_stats", fake_token_stats)
    vocab = setup["vocab"]
    rows = by_id(TokenizeStage(setup["dir"], ROLES, setup["vocab_path"], token_recon=True)(batch()))
    sizes = {name: info["vocab_size"] for name, info in vocab.tokenizers.items()}
    for rid, r in rows.items():
        if r["status"] != "ok":
            continue
        stats = json.loads(r["stats"])
        assert stats["decoded_stat"] == len(rid)  # the decoded row's stats survive the merge
        if r["kind"] in ("text", "chat"):
            assert stats["recon"] is None
        else:
            assert isinstance(stats["recon"], float) and stats["recon"] >= 0, (rid, stats)
    # token stats are over the item's own media codes (video: the frames, not its audio track)
    img = rows["img"]
    (span,) = [s for s in img["spans"] if s["modality"] == "image"]
    assert json.loads(img["stats"])["n_codes"] == span["end"] - span["start"]
    assert sorted({c[1] for c in calls.values()}) == sorted({sizes[k] for k in ("text", "image", "audio", "sensor")})
    no_recon = by_id(TokenizeStage(setup["dir"], ROLES, setup["vocab_path"])(batch()))
    assert json.loads(no_recon["img"]["stats"])["recon"] is None


def test_real_token_stats_are_json_in_the_stats_column(setup):
    from dataengine.curate.stats import token_stats

    rows = by_id(TokenizeStage(setup["dir"], ROLES, setup["vocab_path"], token_recon=True)(batch()))
    stats = json.loads(rows["img"]["stats"])
    ref = token_stats(np.zeros(4, np.int32), 16, 0.5)
    assert set(ref) <= set(stats) and stats["decoded_stat"] == 3


def test_recon_mse_units():
    rng = np.random.default_rng(1)
    img = rng.integers(0, 255, (8, 8, 3), dtype=np.uint8)
    assert recon_mse("image", img, img, None) == 0.0
    assert recon_mse("image", np.zeros((8, 8, 3), np.uint8), np.full((8, 8, 3), 255, np.uint8), None) == 1.0
    frames = rng.integers(0, 255, (3, 8, 8, 3), dtype=np.uint8)
    assert recon_mse("frames", frames, frames[:2], None) == 0.0  # a temporal codec's frame count may differ
    x = rng.normal(size=(500, 2)) * np.array([1.0, 100.0])
    noise = rng.normal(size=(500, 2)) * np.array([0.1, 10.0])  # 10% of each channel's scale
    assert recon_mse("sensor", x, x + noise, None) == pytest.approx(0.01, rel=0.2)  # unit-free
    with pytest.raises(ValueError):
        recon_mse("image", img, img[:4], None)


@pytest.mark.parametrize("pack", [False, True])
def test_inspect_decodes_every_task_and_packed_rows(setup, tmp_path, pack):
    from dataengine.compose.pack import pack_sequences
    from dataengine.inspect import decode_sequence

    toks = load_tokenizers(setup["dir"], ROLES)
    cfg = only({k: "instruct" for k in ("image", "video", "audio", "sensor")})
    rows = [r for r in TokenizeStage(setup["dir"], ROLES, setup["vocab_path"], compose=cfg)(batch()).to_pylist()
            if r["status"] == "ok"]
    if pack:
        rows = pack_sequences(rows, 10_000)
        assert len(rows) == 1 and len(rows[0]["documents"]) == 7
    written = []
    for k, r in enumerate(rows):
        (tmp_path / str(k)).mkdir()
        written += decode_sequence(r, setup["vocab"], toks, tmp_path / str(k))
    assert sorted(p.suffix for p in written if p.suffix != ".txt") == [".csv", ".gif", ".png", ".png", ".wav", ".wav"]
    text = "".join(p.read_text() for p in written if p.suffix == ".txt")
    assert "<|user|>" in text and CAPTION in text
