"""Fitting `causal_video`: a causal temporal autoencoder in an image autoencoder's latent space.

1. The frame encoder/decoder come from an `fsq_image` tokenizer of the same
   size, downsample and channels: the ``image_tokenizer`` resource when it
   matches (the demo fits the image tokenizer first), else one fitted here on
   the video frames and the still images. They are copied and frozen.
2. Clips (``1 + 2 * temporal_downsample`` frames) go through the frozen frame
   encoder ONCE, up front: windows of the videos and their mirror images (a
   seeded subset of 512 at most) and, since a corpus seldom holds enough
   video, synthetic clips made from still images by a slow random pan or zoom
   (a real trick of video tokenizers). Training draws from these latents, so
   a step costs only the small time encoder/decoder: many steps fit in a CPU
   budget. A training batch is half video windows, half synthetic clips, each
   batch played backwards half of the time (zoom in <-> zoom out).
3. Loss: MSE between the time decoder's per-frame features and the image
   tokenizer's quantised latents of the same frames (what the frozen frame
   decoder was trained to decode).

Validation (never trained on): the first ~10% of the videos and up to 8 of
the first ~10% of the stills, as clips drawn once with a fixed generator.
"""
from __future__ import annotations

import math
from typing import Any, Callable

import torch
import torch.nn as nn
import torch.nn.functional as F

from dataengine.errors import RecipeError
from dataengine.tokenize.base import resolve_params, seeded
from dataengine.tokenize.image_fsq import FSQImageTokenizer, as_rgb, to_unit
from dataengine.tokenize.training import n_validation, train
from dataengine.tokenize.video_ops import as_video, per_frame

MAX_SPEED_PX = 8.0  # synthetic pans: up to this many pixels per frame (at the tokenizer's size)
MAX_ZOOM = 0.06  # synthetic zooms: the window scales by up to 6% per frame
SYNTHETIC_PER_STILL = 4  # synthetic clips per still image (at most MAX_SYNTHETIC in all)
MAX_SYNTHETIC = 384
MAX_REAL = 512  # video windows (mirrored ones included) kept for training


def synthetic_clip(img_3HW: torch.Tensor, length: int, g: torch.Generator) -> torch.Tensor:
    """A still image as a clip [L,3,S,S]: a pan (constant velocity) or a zoom, or (10%) static."""
    S = img_3HW.shape[-1]
    u = torch.rand(6, generator=g).tolist()
    base = 0.7 + 0.3 * u[0]  # window side as a fraction of the image
    cx, cy = (2 * u[1] - 1) * (1 - base), (2 * u[2] - 1) * (1 - base)
    vx = vy = 0.0
    zoom = 1.0
    if u[3] < 0.45:  # pan: pixels per frame -> normalised units per frame
        speed, angle = MAX_SPEED_PX * u[4] * 2 / S, 2 * math.pi * u[5]
        vx, vy = speed * math.cos(angle), speed * math.sin(angle)
    elif u[3] < 0.9:
        zoom = 1 + MAX_ZOOM * (2 * u[4] - 1)
    t_L = torch.arange(length, dtype=torch.float32)
    theta_L23 = torch.zeros(length, 2, 3)
    theta_L23[:, 0, 0] = theta_L23[:, 1, 1] = base * zoom**t_L
    theta_L23[:, 0, 2], theta_L23[:, 1, 2] = cx + vx * t_L, cy + vy * t_L
    grid_LHW2 = F.affine_grid(theta_L23, [length, 3, S, S], align_corners=False)
    x_L3HW = F.grid_sample(img_3HW[None].expand(length, -1, -1, -1), grid_LHW2, mode="bilinear",
                           padding_mode="reflection", align_corners=False)
    return x_L3HW


def video_windows(video_T3HW: torch.Tensor, length: int, stride: int = 1) -> list[torch.Tensor]:
    """Every window of ``length`` frames (a short video: padded by repeating its last frame)."""
    T = len(video_T3HW)
    if T < length:
        return [torch.cat([video_T3HW, video_T3HW[-1:].expand(length - T, -1, -1, -1)])]
    return [video_T3HW[s : s + length] for s in range(0, T - length + 1, stride)]


@torch.no_grad()
def latents(image: FSQImageTokenizer, clips: list[torch.Tensor], chunk: int = 16) -> tuple[torch.Tensor, torch.Tensor]:
    """Clips [L,3,S,S] through the frozen frame encoder -> (z_NLChw, zq_NLChw: the image tokenizer's
    quantised latents, what its decoder decodes)."""
    zs, zqs = [], []
    for i in range(0, len(clips), chunk):
        z = per_frame(image.model.encoder, torch.stack(clips[i : i + chunk]))
        zs.append(z)
        zqs.append(per_frame(lambda t: image.model.fsq(t)[0], z))
    return torch.cat(zs), torch.cat(zqs)


def frame_autoencoder(image: Any, p: dict, frames: list[torch.Tensor], seed: int, log) -> FSQImageTokenizer:
    """The given fsq_image tokenizer when its shapes match, else one fitted here on ``frames``."""
    want = {"size": p["size"], "downsample": p["spatial_downsample"], "channels": p["channels"]}
    if isinstance(image, FSQImageTokenizer) and all(image.params[k] == v for k, v in want.items()):
        log(f"[causal_video] frame encoder/decoder from fsq_image {image.weights_sha256()[:12]}")
        return image
    if image is not None:
        log(f"[causal_video] the image tokenizer's shapes {({k: image.params.get(k) for k in want})} "
            f"differ from {want}: fitting a frame autoencoder here")
    imgs = [((f.permute(1, 2, 0) + 1) * 127.5).round().to(torch.uint8).numpy() for f in frames]
    sub = {k: p[k] for k in ("steps", "lr", "patience", "eval_every")}
    return FSQImageTokenizer.fit(imgs, {**want, **sub}, seed=seed, log=log)


def training_latents(image: FSQImageTokenizer, videos: list[torch.Tensor], stills: list[torch.Tensor],
                     nv: int, ni: int, length: int, g: torch.Generator, log) -> dict:
    """Clips -> latents through the frozen frame encoder: training pool (real first) + validation."""
    real = [(w, flip) for v in videos[nv:] for w in video_windows(v, length) for flip in (False, True)]
    if len(real) > MAX_REAL:  # a seeded subset keeps memory and the up-front encoding bounded
        real = [real[i] for i in torch.randperm(len(real), generator=g)[:MAX_REAL].sort().values.tolist()]
    real_clips = [w.flip(-1) if flip else w for w, flip in real]
    n_syn = min(MAX_SYNTHETIC, SYNTHETIC_PER_STILL * len(stills[ni:]))
    syn = [synthetic_clip(stills[ni + int(torch.randint(0, len(stills) - ni, (1,), generator=g))], length, g)
           for _ in range(n_syn)]
    val = [w for v in videos[:nv] for w in video_windows(v, length, stride=length)][:8]
    val += [synthetic_clip(im, length, g) for im in stills[:ni]]
    z, zq = latents(image, real_clips + syn)
    z_val, zq_val = latents(image, val) if val else (z[:0], zq[:0])
    log(f"[causal_video] {len(videos) - nv} videos -> {len(real_clips)} clips, {len(stills) - ni} stills -> "
        f"{n_syn} synthetic clips of {length} frames; validation: {nv} videos + {ni} stills")
    return {"z": z, "zq": zq, "n_real": len(real_clips), "n_syn": n_syn,
            "val": [(z_val[i : i + 16], zq_val[i : i + 16]) for i in range(0, len(z_val), 16)]}


def fit_causal_video(cls: type, samples: list, params: dict, *, seed: int, log: Callable[[str], Any],
                     fitted_on: dict | None, images: list | None, image_tokenizer: Any = None):
    """Train a `causal_video` tokenizer; returns it with the best validation weights."""
    p = resolve_params(cls.family, cls.defaults, params)
    if not samples:
        raise RecipeError("causal_video: no videos to fit on; add video inputs to the corpus")
    size, length = p["size"], 1 + 2 * p["temporal_downsample"]
    videos = [to_unit(as_video(v), size) for v in samples]  # [T,3,S,S]
    stills = [to_unit(as_rgb(im)[None], size)[0] for im in (images or [])]
    nv, ni = n_validation(len(videos)), min(8, n_validation(len(stills)))
    train_frames = [f for v in videos[nv:] for f in v] + stills[ni:]
    image = frame_autoencoder(image_tokenizer, p, train_frames, seed, log)
    with seeded(seed):  # one thread from here on: the same latents, bit for bit, on any machine
        data = training_latents(image, videos, stills, nv, ni, length, torch.Generator().manual_seed(seed), log)
        n_real, n_syn = data["n_real"], data["n_syn"]

        def draw(g: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
            B = p["batch_size"]
            if n_syn and n_real:  # half video windows, half synthetic clips
                i = torch.where(torch.rand(B, generator=g) < 0.5, torch.randint(0, n_real, (B,), generator=g),
                                n_real + torch.randint(0, n_syn, (B,), generator=g))
            else:
                i = torch.randint(0, n_real + n_syn, (B,), generator=g)
            z_BLChw, zq_BLChw = data["z"][i], data["zq"][i]
            if torch.rand(1, generator=g).item() < 0.5:  # played backwards: zoom in <-> zoom out
                z_BLChw, zq_BLChw = z_BLChw.flip(1), zq_BLChw.flip(1)
            return z_BLChw, zq_BLChw

        def loss_fn(model: nn.Module, batch: tuple[torch.Tensor, torch.Tensor]) -> torch.Tensor:
            z_BLChw, zq_BLChw = batch  # the target: the image tokenizer's quantised latents
            zq_BtChw, _ = model.quantize(model.time_encoder(z_BLChw))
            return F.mse_loss(model.time_decoder(zq_BtChw), zq_BLChw)

        tok = cls(p)
        tok.model.frame_encoder.load_state_dict(image.model.encoder.state_dict())
        tok.model.frame_decoder.load_state_dict(image.model.decoder.state_dict())
        tok.model.frame_encoder.requires_grad_(False)  # frozen: only the time encoder/decoder train
        tok.model.frame_decoder.requires_grad_(False)
        run = train(tok.model, draw, loss_fn, data["val"], steps=p["steps"], lr=p["lr"],
                    generator=torch.Generator().manual_seed(seed), patience=p["patience"],
                    eval_every=p["eval_every"], log=log, tag="causal_video")
        tok.model.load_state_dict(run.state)
        tok.model.requires_grad_(True)
        tok.model.eval()
    log(f"[causal_video] done at step {run.facts['steps_run']}/{p['steps']}: best val latent mse "
        f"{run.facts['best_val_loss']:.4f} at step {run.facts['best_step']}, {run.facts['seconds']}s")
    tok.fitted_on = {"n_samples": len(samples), "n_stills": len(stills), "n_val_videos": nv,
                     "n_val_stills": ni, "frame_autoencoder": image.weights_sha256(), "seed": seed,
                     **run.card_facts(), **(fitted_on or {})}
    return tok
