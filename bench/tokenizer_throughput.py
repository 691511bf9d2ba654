"""Encode/decode throughput of fitted tokenizers: batched vs one item at a time, CPU and GPU.

    .venv/bin/dataengine demo-corpus /tmp/h3corpus
    .venv/bin/dataengine fit pipelines/demo.yaml --input /tmp/h3corpus --tokenizers /tmp/h3toks
    .venv/bin/python bench/tokenizer_throughput.py --tokenizers /tmp/h3toks --input /tmp/h3corpus \\
        --json bench/results/tokenizer_throughput_cpu.json

Items are the corpus's decoded items (the recipe's decode settings), taken from
the fitting split's held-out units (all units when none are held out), at most
``--max-items`` per role. For every role with a fitted tokenizer in
``--tokenizers`` (text, image, video, audio, sensor) and every device (the CPU;
CUDA too when present, unless ``--devices`` says otherwise) it times:

- encode, one at a time: ``tok.encode(x)`` per item;
- encode, batched: ``tok.encode_batch(items[i:i+B])`` (what a tokenizer actor
  does with one batch of the tokenize stage, ``B = --batch``);
- decode, one at a time / batched: ``tok.decode`` / ``tok.decode_batch``;

and reports items/s, tokens/s, the batched/one-at-a-time speed ratio and the
share of codes identical between the two. When the video tokenizer is not
`frames`, `video_frames` times `frames` over the image tokenizer on the same
videos, for comparison. Each timing is the median of
``--repeat`` runs after one warm-up call. Torch uses ``--threads`` CPU threads
(default 1, as a tokenizer actor does). The JSON records the machine, package
versions and the exact command line.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import shlex
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import torch

import benchlib

from dataengine.tokenize.base import read_card
from dataengine.tokenize.registry import load_tokenizer
from dataengine.tokenize.video_frames import FramesTokenizer

ROLES = ("text", "image", "video", "audio", "sensor")
PACKAGES = ("torch", "torchaudio", "numpy", "tokenizers", "vector-quantize-pytorch", "sentencepiece", "ray")


def load_tokenizers(tokdir: Path, roles: list[str]) -> dict:
    """Every role's fitted tokenizer; video gets the image tokenizer (as the tokenize stage does)."""
    toks = {}
    for role in sorted(roles, key=lambda r: r == "video"):  # image before video
        toks[role] = load_tokenizer(tokdir / role, **({"image_tokenizer": toks["image"]} if role == "video" else {}))
    return toks


def save_items(items: dict[str, list], path: Path) -> None:
    """Decoded items as one safetensors file (arrays as tensors, texts in its JSON metadata; no pickle).

    A GPU machine without the decoders (av, soundfile, ...) then times the tokenizers on the
    very items this machine decoded: `--save-items` here, `--items` there.
    """
    from safetensors.numpy import save_file

    arrays = {f"{role}/{i:05d}": np.ascontiguousarray(x) for role, xs in items.items() if role != "text"
              for i, x in enumerate(xs)}
    save_file(arrays, str(path), metadata={"text": json.dumps(items.get("text", []), ensure_ascii=False),
                                           "roles": json.dumps(sorted(items))})


def read_items(path: Path, roles: list[str]) -> dict[str, list]:
    from safetensors.numpy import load_file
    from safetensors import safe_open

    with safe_open(str(path), "np") as f:
        meta = f.metadata()
    arrays = load_file(str(path))
    out = {role: [arrays[k] for k in sorted(arrays) if k.split("/")[0] == role] for role in json.loads(meta["roles"])}
    out["text"] = json.loads(meta["text"]) if "text" in out else []
    return {r: out.get(r, []) for r in roles}


def load_items(recipe_path: str, corpus: str, roles: list[str], max_items: int, log) -> dict[str, list]:
    from dataengine.discover import discover
    from dataengine.recipe import load_recipe
    from dataengine.pipeline.decode_stage import decode_stage_for
    from dataengine.tokenize.samples import collect_samples, split_units

    r = load_recipe(recipe_path, inputs=[corpus])
    found = discover([(s.name, r.resolve(s.path)) for s in r.sources], max_file_bytes=r.decode.max_file_bytes)
    fit_units, held = split_units(r, found.units)
    samples = collect_samples(r, held or fit_units, decode_stage_for(r), log=log)
    out, extra = {}, None
    for role in roles:
        items = samples.get(role, [])
        if len(items) < max_items and held:  # a small held-out split: top up from the fitting units
            if extra is None:
                extra = collect_samples(r, fit_units, decode_stage_for(r), log=log)
            items = items + extra.get(role, [])[: max_items - len(items)]
        out[role] = items[:max_items]
    return out


def timed(fn, repeat: int, sync) -> tuple[float, object]:
    """Median wall seconds of ``fn()`` over ``repeat`` runs (after one warm-up), and its last result."""
    fn()
    sync()
    times, result = [], None
    for _ in range(repeat):
        t0 = time.perf_counter()
        result = fn()
        sync()
        times.append(time.perf_counter() - t0)
    return statistics.median(times), result


def chunks(xs: list, n: int) -> list[list]:
    return [xs[i : i + n] for i in range(0, len(xs), n)]


def same_codes(a: list, b: list) -> float:
    flat_a = np.concatenate([np.asarray(c).reshape(-1) for c, _ in a]) if a else np.zeros(0)
    flat_b = np.concatenate([np.asarray(c).reshape(-1) for c, _ in b]) if b else np.zeros(0)
    if flat_a.shape != flat_b.shape:
        return 0.0
    return float((flat_a == flat_b).mean()) if flat_a.size else 1.0


def bench_role(tok, items: list, batch: int, repeat: int, device: str) -> dict:
    sync = torch.cuda.synchronize if device.startswith("cuda") else (lambda: None)
    n = len(items)
    t_one, enc_one = timed(lambda: [tok.encode(x) for x in items], repeat, sync)
    t_bat, enc_bat = timed(lambda: [e for c in chunks(items, batch) for e in tok.encode_batch(c)], repeat, sync)
    tokens = int(sum(np.asarray(c).size for c, _ in enc_one))
    d_one, _ = timed(lambda: [tok.decode(c, s) for c, s in enc_one], repeat, sync)
    d_bat, _ = timed(lambda: [d for c in chunks(enc_one, batch) for d in tok.decode_batch(c)], repeat, sync)

    def rates(seconds: float) -> dict:
        return {"seconds": round(seconds, 4), "items_per_s": round(n / seconds, 2),
                "tokens_per_s": round(tokens / seconds, 1)}

    return {
        "family": tok.family, "items": n, "tokens": tokens, "batch": batch,
        "encode": {"one_at_a_time": rates(t_one), "batched": rates(t_bat),
                   "batched_speedup": round(t_one / t_bat, 3),
                   "batched_codes_identical": round(same_codes(enc_one, enc_bat), 6)},
        "decode": {"one_at_a_time": rates(d_one), "batched": rates(d_bat),
                   "batched_speedup": round(d_one / d_bat, 3),
                   "batched_is_real": type(tok).decode_batch is not _base_decode_batch()},
    }


def _base_decode_batch():
    from dataengine.tokenize.base import Tokenizer

    return Tokenizer.decode_batch


def machine() -> dict:
    info = {"platform": platform.platform(), "python": platform.python_version(),
            "processor": platform.processor() or platform.machine(), "cpu_count": os.cpu_count(),
            "torch": torch.__version__, "torch_threads": torch.get_num_threads(),
            "cuda_available": torch.cuda.is_available()}
    try:
        info["cpu_affinity"] = len(os.sched_getaffinity(0))
    except AttributeError:
        pass
    try:
        model = [ln.split(":", 1)[1].strip() for ln in Path("/proc/cpuinfo").read_text().splitlines()
                 if ln.startswith("model name")]
        info["cpu_model"] = model[0] if model else None
    except OSError:
        pass
    if torch.cuda.is_available():
        info["cuda_device"] = torch.cuda.get_device_name(0)
        info["cuda_version"] = torch.version.cuda
    return info


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--tokenizers", required=True, help="fitted tokenizers: DIR/<role>/card.yaml")
    ap.add_argument("--input", help="corpus folder (e.g. the demo corpus)")
    ap.add_argument("--items", help="decoded items saved by --save-items (instead of decoding --input)")
    ap.add_argument("--save-items", help="also save the decoded items here (safetensors) for --items elsewhere")
    ap.add_argument("--json", required=True, help="where to write the results")
    ap.add_argument("--recipe", default="pipelines/demo.yaml", help="decode settings and the held-out split")
    ap.add_argument("--roles", nargs="+", default=list(ROLES), choices=ROLES)
    ap.add_argument("--devices", nargs="+", help="default: cpu, and cuda when available")
    ap.add_argument("--batch", type=int, default=16, help="items per encode_batch/decode_batch call "
                    "(the demo recipe's execution.tokenize_batch is 16)")
    ap.add_argument("--max-items", type=int, default=64, help="items per role")
    ap.add_argument("--repeat", type=int, default=3, help="timed runs per measurement (median)")
    ap.add_argument("--threads", type=int, default=1, help="torch CPU threads (a tokenizer actor uses 1)")
    args = ap.parse_args()

    torch.set_num_threads(args.threads)
    log = lambda m: print(m, file=sys.stderr, flush=True)  # noqa: E731
    tokdir = Path(args.tokenizers)
    roles = [r for r in args.roles if (tokdir / r / "card.yaml").is_file()]
    devices = args.devices or (["cpu", "cuda"] if torch.cuda.is_available() else ["cpu"])
    if not (args.input or args.items):
        ap.error("pass --input CORPUS (decode it here) or --items FILE (items decoded by --save-items)")
    if args.items:
        items = read_items(Path(args.items), roles)
    else:
        items = load_items(args.recipe, args.input, roles, args.max_items, log)
    if args.save_items:
        save_items(items, Path(args.save_items))
    report = {
        "command": " ".join(shlex.quote(a) for a in [sys.executable, *sys.argv]),
        "cwd": os.getcwd(), "machine": machine(), "versions": benchlib.versions(("dataengine",) + PACKAGES),
        "settings": {"batch": args.batch, "max_items": args.max_items, "repeat": args.repeat,
                     "threads": args.threads, "recipe": args.recipe, "input": args.input,
                     "items": args.items},
        "tokenizers": {r: {k: read_card(tokdir / r).get(k) for k in ("family", "version", "vocab_size",
                                                                     "weights_sha256")} for r in roles},
        "results": {},
    }
    for device in devices:
        toks = load_tokenizers(tokdir, roles)
        if device != "cpu":
            for tok in toks.values():
                tok.to(device)
        if "image" in toks and items.get("video") and toks.get("video", None) is not None \
                and toks["video"].family != "frames":  # also time `frames` over the same image model
            toks["video_frames"] = FramesTokenizer(toks["image"])
            items["video_frames"] = items["video"]
        res = report["results"][device] = {}
        for role in [r for r in (*roles, "video_frames") if r in toks]:
            if not items[role]:
                res[role] = {"error": f"no decoded {role} items in {args.input}"}
                continue
            t0 = time.time()
            with torch.inference_mode():
                res[role] = bench_role(toks[role], items[role], args.batch, args.repeat, device)
            e, d = res[role]["encode"], res[role]["decode"]
            log(f"[{device}] {role:12s} {toks[role].family:13s} n={len(items[role]):3d} "
                f"encode {e['one_at_a_time']['items_per_s']:9.1f} -> {e['batched']['items_per_s']:9.1f} items/s "
                f"(x{e['batched_speedup']}, codes same {e['batched_codes_identical']:.4f})  "
                f"decode {d['one_at_a_time']['items_per_s']:8.1f} -> {d['batched']['items_per_s']:8.1f} items/s "
                f"(x{d['batched_speedup']})  [{time.time() - t0:.0f}s]")
    out = Path(args.json)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=2) + "\n")
    log(f"wrote {out}")


if __name__ == "__main__":
    main()
