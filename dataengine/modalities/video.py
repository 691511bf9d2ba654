"""Video: frames sampled at the recipe's rate (resized for the image tokenizer the video family builds
on) and, when the container has one, the soundtrack, carried in the video's span as audio codes."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa

from dataengine.curate.stats_visual import VIDEO_ANALYSIS_SIDE, video_stats
from dataengine.decode.image import square_resize
from dataengine.decode.video import VIDEO_EXTS, decode_video
from dataengine.errors import RecipeError
from dataengine.evaluate.video import evaluate_video
from dataengine.mediaio import write_video
from dataengine.modalities.image import pixel_mse
from dataengine.modalities.spec import DecodeContext, Decoded, Modality

F, B = pa.float64(), pa.bool_()


@dataclass
class VideoDecode:
    fps: float = 2.0          # frames sampled per second of video
    max_seconds: float = 10.0  # longer clips are cut here (recorded as truncated)
    max_frames: int = 8
    max_pixels: int = 8_294_400  # 4K UHD per frame
    # pyav: safe on damaged files. decord: random access, faster on long clips, but its bundled
    # FFmpeg can segfault on some damaged MP4/AVI files, which kills the worker (see the decoder).
    backend: str = "pyav"


def decode(data: bytes, path: str, sidecar: dict | None, meta: dict, ctx: DecodeContext) -> Decoded:
    c, size = ctx.config, ctx.sizes["image"]
    v = decode_video(data, fps=c.video.fps, max_seconds=c.video.max_seconds, max_frames=c.video.max_frames,
                     max_pixels=c.video.max_pixels, sample_rate=c.audio.sample_rate, backend=c.video.backend,
                     short_side=max(size, VIDEO_ANALYSIS_SIDE))  # what tokens and stats use
    meta.update({"fps": v.fps, "duration_s": v.duration_s, "truncated": v.truncated,
                 "frames": int(v.frames.shape[0]), "has_audio": v.audio is not None,
                 "width": v.width, "height": v.height})
    full = {"frames": v.frames} if v.audio is None else {"frames": v.frames, "audio": v.audio}
    arrays = {"frames": np.stack([square_resize(f, size) for f in v.frames])}
    if v.audio is not None and len(v.audio) and "audio" in ctx.modalities:
        arrays["audio"] = v.audio.astype(np.float32)
    return Decoded(arrays, full, meta)


def stats(full: dict, smeta: dict) -> dict:
    return video_stats(full["frames"], smeta["fps"], smeta["duration_s"], bool(smeta.get("has_audio")),
                       smeta.get("width"), smeta.get("height"))


def fit_items(frames: np.ndarray) -> dict[str, list]:
    """The clip fits the video tokenizer; a few of its frames fit the image tokenizer too."""
    return {"video": [frames], "image": list(frames[:: max(1, len(frames) // 2)])}


def write_decoded(stem: Path, value, side: dict, meta: dict, tok) -> Path:
    return write_video(stem.with_suffix(".gif"), value, float(meta.get("fps") or 2.0))


def check_recipe(r, where: str) -> None:
    if r.decode.video.backend not in ("pyav", "decord"):
        raise RecipeError(f"{where}.decode.video.backend: use 'pyav' or 'decord', got {r.decode.video.backend!r}")


SPEC = Modality(
    name="video", array="frames", extensions=tuple(sorted(VIDEO_EXTS)),
    markers=("<|video_start|>", "<|video_end|>"), separator="<|frame_sep|>", in_vocab_v1=True,
    # a temporal codec: one row per latent frame
    rows=lambda side, local: int(side.get("latent_frames", side["frames"])), paired_text="caption",
    tasks=("video_to_caption", "caption_to_video", "instruct", "video"),
    default_tasks={"video_to_caption": 0.4, "caption_to_video": 0.4, "instruct": 0.2},
    templates=("What happens in this video?", "Describe this video.", "Write a caption for this clip."),
    ngram=2, threshold=0.5,
    stat_fields={
        # frames as sampled by the decoder; motion/black/frozen at longest side 128 px
        "video_duration_s": F,       # source duration, s
        "video_fps": F,              # rate of the sampled frames, frames/s
        "video_width": F,            # frame width, px
        "video_height": F,           # frame height, px
        "video_motion": F,           # mean abs difference of consecutive sampled grey frames, 0..1
        "video_black_ratio": F,      # fraction of sampled frames >= 98% pixels below 10% grey (ffmpeg blackdetect)
        "video_frozen_ratio": F,     # fraction of consecutive frame pairs with mean abs difference < 0.002
        "video_has_audio": B,        # the container has a non-empty audio track
    },
    decode_config=VideoDecode, decode=decode, stats=stats, needs=("image",), fit_items=fit_items,
    fit_resources=lambda load, samples: {"image_tokenizer": load("image"), "images": samples["image"]},
    recon_mse=pixel_mse, recon_unit="pixel MSE, [0,1] scale", write_decoded=write_decoded,
    evaluate=evaluate_video,
    eval_keys=("psnr", "ssim", "tokens_per_second", "frames_psnr", "frames_ssim", "frames_tokens_per_second"),
    eval_resources=lambda d: {"video_fps": d.video.fps}, check_recipe=check_recipe, color="#e45756",
)
