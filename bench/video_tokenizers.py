"""Frame-by-frame (`frames` over `fsq_image`) vs temporal (`causal_video`) video tokens.

    .venv/bin/dataengine demo-corpus /tmp/h1corpus
    .venv/bin/python bench/video_tokenizers.py /tmp/h1corpus [--save DIR | --tokenizers DIR]

Held-out protocol: the corpus's video sample groups that the recipe would fit
on are ranked by a seeded hash of their id and the first ``--heldout`` (3) are
set aside; both tokenizers are fitted on everything else (images, the other
videos' clips and frames) and evaluated on the held-out videos, decoded with
the recipe's video settings (``--fps`` / ``--max-frames`` override them).

Metrics (as in dataengine.evaluate.video): PSNR pools the squared error over all
frames of a clip, then is averaged over clips; tokens per second is all tokens
over all seconds, a clip of T frames lasting T / fps seconds.

With ``--tokenizers DIR`` (holding ``image/`` and ``causal_video/``, as written
by ``--save``) nothing is fitted; the videos are held out only if DIR was
written by this script.
"""
from __future__ import annotations

import argparse
import hashlib
import json
import time
from pathlib import Path

import numpy as np

from dataengine.discover import discover
from dataengine.recipe import load_recipe
from dataengine.tokenize import load_tokenizer
from dataengine.pipeline.decode_stage import decode_stage_for
from dataengine.tokenize.samples import collect_samples, resolved_params, split_units
from dataengine.tokenize.image_fsq import FSQImageTokenizer
from dataengine.tokenize.video_causal import CausalVideoTokenizer
from dataengine.tokenize.video_frames import FramesTokenizer


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    mse = float(np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2))
    return float(10 * np.log10(255.0**2 / max(mse, 1e-10)))


def evaluate(tok, clips: list[np.ndarray], fps: float) -> dict:
    t0 = time.time()
    encoded = tok.encode_batch(clips)
    recons = [tok.decode(codes, side) for codes, side in encoded]
    n_tokens = sum(len(codes) for codes, _ in encoded)
    seconds = sum(len(c) / fps for c in clips)
    per_clip = [psnr(c, r) for c, r in zip(clips, recons)]
    return {"psnr": round(float(np.mean(per_clip)), 2), "psnr_per_clip": [round(p, 2) for p in per_clip],
            "tokens_per_second": round(n_tokens / seconds, 1), "tokens": n_tokens,
            "vocab_size": tok.vocab_size, "codec_seconds": round(time.time() - t0, 1)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("corpus", help="a folder such as the demo corpus")
    ap.add_argument("--recipe", default="pipelines/demo.yaml")
    ap.add_argument("--fps", type=float, help="override decode.video.fps")
    ap.add_argument("--max-frames", type=int, help="override decode.video.max_frames")
    ap.add_argument("--heldout", type=int, default=3, help="videos held out for evaluation")
    ap.add_argument("--causal-params", default="{}", help="JSON params for causal_video")
    ap.add_argument("--tokenizers", help="load image/ and causal_video/ from here instead of fitting")
    ap.add_argument("--save", help="save the fitted tokenizers here")
    ap.add_argument("--quiet", action="store_true", help="no training progress")
    args = ap.parse_args()

    r = load_recipe(args.recipe, inputs=[args.corpus])
    if args.fps:
        r.decode.video.fps = args.fps
    if args.max_frames:
        r.decode.video.max_frames = args.max_frames
    fps = r.decode.video.fps
    log = (lambda *_: None) if args.quiet else print
    found = discover([(s.name, r.resolve(s.path)) for s in r.sources], max_file_bytes=r.decode.max_file_bytes)
    fit_units, _ = split_units(r, found.units)
    rank = lambda u: hashlib.sha256(f"heldout-video:{r.seed}:{u.unit_id}".encode()).hexdigest()  # noqa: E731
    videos = sorted((u for u in fit_units if u.kind == "video"), key=rank)
    held = {u.unit_id for u in videos[: args.heldout]}
    stage = decode_stage_for(r)
    clips = collect_samples(r, [u for u in videos if u.unit_id in held], stage, log=log)["video"]
    print(f"held out {len(clips)} videos ({', '.join(u.media for u in videos[: args.heldout])}); "
          f"frames {[len(c) for c in clips]} at {fps:g} fps")

    facts: dict = {}
    if args.tokenizers:
        image = load_tokenizer(Path(args.tokenizers) / "image")
        causal = load_tokenizer(Path(args.tokenizers) / "causal_video")
    else:
        samples = collect_samples(r, [u for u in fit_units if u.unit_id not in held], stage, log=log)
        t0 = time.time()
        image = FSQImageTokenizer.fit(samples["image"], resolved_params(r, "image"), seed=r.seed, log=log)
        facts["fsq_image_fit_seconds"] = round(time.time() - t0, 1)
        spec = r.tokenizers.get("video")
        params = dict(spec.params) if spec is not None and spec.family == "causal_video" else {}
        params.update(json.loads(args.causal_params))
        t0 = time.time()
        causal = CausalVideoTokenizer.fit(samples["video"], params, seed=r.seed, log=log,
                                          images=samples["image"], image_tokenizer=image)
        facts["causal_video_fit_seconds"] = round(time.time() - t0, 1)
        if args.save:
            image.save(Path(args.save) / "image")
            causal.save(Path(args.save) / "causal_video")
    frames = FramesTokenizer.fit(clips, {}, seed=r.seed, log=lambda *_: None, image_tokenizer=image)
    res = {"frames": evaluate(frames, clips, fps), "causal_video": evaluate(causal, clips, fps)}
    f, c = res["frames"], res["causal_video"]
    ratio = c["tokens_per_second"] / f["tokens_per_second"]
    drop = f["psnr"] - c["psnr"]
    print(f"{'tokenizer':<14}{'PSNR dB':>9}{'tokens/s':>10}{'vocab':>8}  per clip")
    for name, m in res.items():
        print(f"{name:<14}{m['psnr']:>9.2f}{m['tokens_per_second']:>10.1f}{m['vocab_size']:>8}  {m['psnr_per_clip']}")
    ok = ratio <= 0.5 and drop <= 1.0
    print(f"causal/frames tokens per second {ratio:.3f} (target <= 0.5); PSNR drop {drop:.2f} dB "
          f"(target <= 1.0): {'MET' if ok else 'NOT MET'}")
    print(json.dumps({"fps": fps, "heldout": sorted(held), **res, **facts,
                      "causal_params": causal.params, "target_met": ok}))


if __name__ == "__main__":
    main()
