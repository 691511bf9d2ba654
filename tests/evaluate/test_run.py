"""End to end: tiny fitted tokenizers measured on a small corpus, through the API and the CLI."""
import json
import math

import pytest

from dataengine.cli import build_parser, main
from dataengine.evaluate.run import evaluate_role, evaluate_tokenizers, resources_for
from dataengine.tokenize.registry import load_tokenizer

COMMON = ("family", "items", "device", "encode_items_per_s", "decode_items_per_s")
KEYS = {
    "text": ("bytes_per_token",),
    "image": ("psnr", "ssim", "baseline_psnr", "baseline_bits", "token_bits", "utilization", "perplexity",
              "tokens_per_item"),
    "video": ("psnr", "ssim", "tokens_per_second", "frames_psnr", "frames_ssim", "frames_tokens_per_second"),
    "audio": ("mel_l1", "baseline_mel_l1", "tokens_per_second", "utilization", "perplexity"),
    "sensor": ("rmse", "max_abs_error", "bound", "within_bound", "tokens_per_second"),
}


def check_role(role, r):
    for k in COMMON + KEYS[role]:
        assert k in r, f"{role}: missing {k} ({r})"
        if k not in ("family", "device"):
            assert math.isfinite(float(r[k])), f"{role}.{k} = {r[k]}"
    assert r["device"] == "cpu" or r["device"].startswith("cuda:")
    assert r["items"] > 0


@pytest.fixture(scope="module")
def results(fitted):
    return evaluate_tokenizers(fitted["toks"], fitted["recipe_path"], [fitted["corpus"]], use_all=True,
                               max_items=6, log=lambda *_: None)


def test_every_role_has_every_key_and_finite_values(results):
    assert set(results) == {"meta", "text", "image", "video", "audio", "sensor"}
    for role in KEYS:
        r = results[role]
        if role == "text" and "error" in r:  # the SentencePiece baseline lives in evaluate/text.py
            assert "baseline" in r["error"] or "evaluate_text" in r["error"]
        else:
            assert "error" not in r, (role, r)
        check_role(role, r)
    if "error" not in results["text"]:
        assert math.isfinite(results["text"]["baseline_bytes_per_token"])
    assert results["image"]["baseline_bits"] <= results["image"]["token_bits"]
    assert results["sensor"]["within_bound"] is True
    assert results["video"]["frames_psnr"] == results["video"]["psnr"]  # `frames` is frame by frame
    assert results["meta"]["split"] == "all" and results["meta"]["fit_texts"] > 0


def test_held_out_split_and_evaluate_role(fitted, results):
    held = evaluate_tokenizers(fitted["toks"], fitted["recipe"], None, use_all=False, max_items=2,
                               log=lambda *_: None)
    assert held["meta"]["units"]["eval"] < results["meta"]["units"]["eval"]
    for role in KEYS:
        assert held[role]["items"] <= 2
        if held[role]["items"] == 0:
            assert "--all" in held[role]["error"]
    sensor = load_tokenizer(fitted["toks"] / "sensor")
    import numpy as np

    one = evaluate_role("sensor", sensor, [np.arange(40, dtype=np.float32).reshape(20, 2)],
                        resources=resources_for(fitted["recipe"]))
    check_role("sensor", one)


def test_cli_writes_json_and_prints_a_table(fitted, tmp_path, capsys):
    out = tmp_path / "eval.json"
    code = main(["tokenizers", "eval", "--tokenizers", str(fitted["toks"]), "--input", str(fitted["corpus"]),
                 "--json", str(out), "--recipe", str(fitted["recipe_path"]), "--all", "--max-items", "2"])
    assert code == 0
    data = json.loads(out.read_text())
    assert {"image", "audio", "sensor"} <= set(data) and data["image"]["items"] <= 2
    printed = capsys.readouterr().out
    assert "baseline_psnr" in printed and str(out) in printed


def test_cli_errors_and_help(tmp_path, fitted, capsys):
    code = main(["tokenizers", "eval", "--tokenizers", str(tmp_path / "none"), "--input", str(fitted["corpus"]),
                 "--json", str(tmp_path / "e.json")])
    assert code == 2 and "fit them first" in capsys.readouterr().err
    code = main(["tokenizers", "eval", "--tokenizers", str(fitted["toks"]), "--input", str(tmp_path / "nope"),
                 "--json", str(tmp_path / "e.json")])
    assert code == 2 and "--input" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        build_parser().parse_args(["tokenizers", "eval", "--help"])
    assert "dataengine tokenizers eval" in capsys.readouterr().out.split("example:")[1]
