"""Images: decoded at full resolution for stats and hash, centre-cropped and resized for the tokenizer."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa

from dataengine.curate.stats_visual import image_stats
from dataengine.evaluate.image import evaluate_image
from dataengine.decode.image import IMAGE_EXTS, decode_image, square_resize
from dataengine.mediaio import write_png
from dataengine.modalities.spec import DecodeContext, Decoded, Modality

F = pa.float64()


@dataclass
class ImageDecode:
    max_pixels: int = 40_000_000  # Pillow's own bomb limit is ~89 MP; 40 MP covers any camera photo


def decode(data: bytes, path: str, sidecar: dict | None, meta: dict, ctx: DecodeContext) -> Decoded:
    img = decode_image(data, max_pixels=ctx.config.image.max_pixels)
    meta["width"], meta["height"] = int(img.shape[1]), int(img.shape[0])
    return Decoded({"image": square_resize(img, ctx.sizes["image"])}, {"image": img}, {})


def pixel_mse(original: np.ndarray, decoded: np.ndarray, tok=None) -> float:
    """Mean squared error of RGB pixels on the [0, 1] scale (frames: over the frames both have)."""
    a = np.asarray(original, np.float64)[..., :3] / 255.0
    b = np.asarray(decoded, np.float64)[..., :3] / 255.0
    if a.ndim == 4:  # a temporal codec may return a different frame count
        n = min(len(a), len(b))
        a, b = a[:n], b[:n]
    if a.shape != b.shape:
        raise ValueError(f"decoded shape {b.shape} differs from the input's {a.shape}")
    return float(np.mean((a - b) ** 2))


def write_decoded(stem: Path, value, side: dict, meta: dict, tok) -> Path:
    return write_png(stem.with_suffix(".png"), value)


SPEC = Modality(
    name="image", array="image", extensions=tuple(sorted(IMAGE_EXTS)),
    markers=("<|image_start|>", "<|image_end|>"), in_vocab_v1=True, paired_text="caption",
    tasks=("image_to_caption", "caption_to_image", "instruct", "image"),
    # understanding (X -> text) and generation (text -> X) in equal parts, a fifth as instructions
    default_tasks={"image_to_caption": 0.4, "caption_to_image": 0.4, "instruct": 0.2},
    templates=("Describe this image.", "What is shown in this picture?", "Write a caption for this image.",
               "Give a short description of the image."),
    interleavable=True,
    # 2-grams: 64 codes per 64x64 image; a re-encode flips a few codes (J >= 0.77), crops stay <= 0.32
    ngram=2, threshold=0.5,
    stat_fields={
        "image_width": F,            # decoded width, px
        "image_height": F,           # decoded height, px
        "image_aspect": F,           # width / height
        "image_blur": F,             # variance of the 4-neighbour Laplacian of grey 0..255; LOW = blurry
        "image_colorfulness": F,     # Hasler & Suesstrunk M on 0..255 RGB; 0 = grey, ~100+ = vivid
        "image_entropy": F,          # grey-level histogram entropy, bits (0..8); low = flat/blank
    },
    decode_config=ImageDecode, decode=decode, stats=lambda full, smeta: image_stats(full["image"]),
    size_param="size", fit_items=lambda arr: {"image": [arr]},
    recon_mse=pixel_mse, recon_unit="pixel MSE, [0,1] scale", write_decoded=write_decoded, picture=True,
    evaluate=evaluate_image,
    eval_keys=("psnr", "baseline_psnr", "ssim", "baseline_ssim", "token_bits", "baseline_bits",
               "utilization", "utilization_bound", "perplexity", "tokens_per_item"),
    color="#f58518",
)
