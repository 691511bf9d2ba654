"""`causal_video`: a causal 3-D conv autoencoder with an FSQ bottleneck (Cosmos-style).

    frames uint8 [T,S,S,3] -> pad T to 1 + k*td (repeat the last frame) -> x_BT3HW in [-1,1]
        -> frame encoder (2-D, each frame: strided convs down by spatial_downsample) -> z_BCThw
        -> time encoder (causal strided convs down by temporal_downsample + (2+1)-D blocks)
        -> z_BCthw, t = 1 + k -> FSQ(levels) -> codes, latent-time-major, raster order
        -> time decoder (causal depth-to-time upsampling) -> frame decoder (2-D) -> frames

Like Cosmos' causal tokenizer, latent frame 0 codes frame 0 alone and latent
frame j >= 1 codes frames 4j-3..4j (td=4). Time convolutions pad on the past
side only and normalisation is per frame, so latent frame j never depends on a
later frame and decoded frame i never on a later latent frame: the codes of a
clip's prefix are the first codes of the clip. The 3-D blocks are factorised
(2+1)-D: 1x3x3 in space, then 3x1x1 in time.

The frame encoder/decoder have `fsq_image`'s shapes: fitting copies them from
a fitted image tokenizer (or fits one) and trains the time encoder/decoder in
its latent space (`video_causal_fit.py`). With the defaults a 64x64 clip of
1 + 4k frames becomes 1 + k grids of 8x8 codes from an implicit codebook of
8*8*8*5*5 = 12800: 64 tokens for the first frame, then 16 per frame.
"""
from __future__ import annotations

import math
from typing import Any, Callable, ClassVar

import numpy as np
import torch
import torch.nn as nn
from vector_quantize_pytorch import FSQ

from dataengine.errors import RecipeError
from dataengine.tokenize.base import (
    ModelTokenizer, group_by_shape,
)
from dataengine.tokenize.image_fsq import Decoder as ImageDecoder
from dataengine.tokenize.image_fsq import Encoder as ImageEncoder
from dataengine.tokenize.image_fsq import to_uint8, to_unit
from dataengine.tokenize.precision import decode_precision, encode_precision
from dataengine.tokenize.video_causal_fit import fit_causal_video
from dataengine.tokenize.video_ops import as_video, per_frame


# ----------------------------------------------------------------------------- model
# Tensors keep time next to batch (x_BTCHW): per-frame 2-D ops see a free [B*T, C, H, W] view (`per_frame`).
class FrameNorm(nn.GroupNorm):
    """GroupNorm of EACH frame on its own (a group's channels x H x W): nothing leaks across time."""

    def __init__(self, c: int, groups: int = 8):
        super().__init__(math.gcd(groups, c), c)

    def forward(self, x_BTCHW: torch.Tensor) -> torch.Tensor:
        return per_frame(super().forward, x_BTCHW)


class SpaceConv(nn.Conv2d):
    """A k x k convolution of each frame (same padding)."""

    def __init__(self, c_in: int, c_out: int, k: int = 3):
        super().__init__(c_in, c_out, k, padding=k // 2)

    def forward(self, x_BTCHW: torch.Tensor) -> torch.Tensor:
        return per_frame(super().forward, x_BTCHW)


class TimeConv(nn.Module):
    """Causal convolution over time, per pixel: output t sees input frames stride*t-k+1 .. stride*t
    (k-1 copies of frame 0 padded in front), so nothing ever depends on a later frame."""

    def __init__(self, c_in: int, c_out: int, k: int = 3, stride: int = 1):
        super().__init__()
        self.k, self.stride = k, stride
        self.proj = nn.Conv2d(k * c_in, c_out, 1)  # the k taps side by side, then 1x1

    def forward(self, x_BTCHW: torch.Tensor) -> torch.Tensor:
        B, T = x_BTCHW.shape[:2]
        x_pad = torch.cat([x_BTCHW[:, :1].expand(-1, self.k - 1, -1, -1, -1), x_BTCHW], dim=1)
        n = (T - 1) // self.stride + 1
        taps = [x_pad[:, j : j + self.stride * (n - 1) + 1 : self.stride] for j in range(self.k)]
        x_BnKCHW = torch.cat(taps, dim=2)  # [B, n, k*C, H, W]
        return per_frame(self.proj, x_BnKCHW)


class ResBlock3d(nn.Module):
    """x + (2+1)-D conv stack: norm, silu, 3x3 in space, 3 in time (causal), twice."""

    def __init__(self, c: int):
        super().__init__()
        self.block = nn.Sequential(
            FrameNorm(c), nn.SiLU(), SpaceConv(c, c), TimeConv(c, c),
            FrameNorm(c), nn.SiLU(), SpaceConv(c, c), TimeConv(c, c),
        )

    def forward(self, x_BTCHW: torch.Tensor) -> torch.Tensor:
        return x_BTCHW + self.block(x_BTCHW)


class TimeDown(TimeConv):
    """[B,1+2m,C,H,W] -> [B,1+m,C,H,W]; output t sees frames <= 2t (frame 0 alone for t=0)."""

    def __init__(self, c: int):
        super().__init__(c, c, k=3, stride=2)


class TimeUp(nn.Module):
    """[B,1+m,C,H,W] -> [B,1+2m,C,H,W]: a causal conv makes 2 sub-frames per step (depth to
    time) and the first output is dropped; output frames 2t-1, 2t come from steps <= t."""

    def __init__(self, c: int):
        super().__init__()
        self.conv = TimeConv(c, 2 * c)

    def forward(self, x_BTCHW: torch.Tensor) -> torch.Tensor:
        B, T, C, H, W = x_BTCHW.shape
        return self.conv(x_BTCHW).reshape(B, 2 * T, C, H, W)[:, 1:]


class TimeEncoder(nn.Module):
    """z_BTChw -> z_BtChw, t = 1 + (T-1) / 2**n_time: causal strided time convs + (2+1)-D blocks."""

    def __init__(self, c: int, n_time: int):
        super().__init__()
        layers: list[nn.Module] = [SpaceConv(c, c, 1)]
        for _ in range(n_time):
            layers += [TimeDown(c), ResBlock3d(c)]
        layers += [FrameNorm(c), nn.SiLU(), SpaceConv(c, c, 1)]
        self.net = nn.Sequential(*layers)

    def forward(self, z_BTChw: torch.Tensor) -> torch.Tensor:
        return self.net(z_BTChw)


class TimeDecoder(nn.Module):
    """zq_BtChw -> z_BTChw (mirror of TimeEncoder): per-frame latents for the frame decoder."""

    def __init__(self, c: int, n_time: int):
        super().__init__()
        layers: list[nn.Module] = [SpaceConv(c, c, 1), ResBlock3d(c)]
        for _ in range(n_time):
            layers += [TimeUp(c), ResBlock3d(c)]
        layers += [FrameNorm(c), nn.SiLU(), SpaceConv(c, c, 1)]
        self.net = nn.Sequential(*layers)

    def forward(self, zq_BtChw: torch.Tensor) -> torch.Tensor:
        return self.net(zq_BtChw)


class CausalVideoFSQ(nn.Module):
    """Frame encoder (2-D, per frame) -> TimeEncoder -> FSQ -> TimeDecoder -> frame decoder.

    The frame encoder/decoder are `fsq_image`'s (same shapes), so a fitted image
    tokenizer can provide them; ``encode`` gives indices_Bthw.
    """

    def __init__(self, levels: list[int], channels: int, spatial_downsample: int, temporal_downsample: int):
        super().__init__()
        n_space = int(round(math.log2(spatial_downsample)))
        n_time = int(round(math.log2(temporal_downsample)))
        self.frame_encoder = ImageEncoder(channels, n_space)  # x_N3HW -> z_NChw
        self.time_encoder = TimeEncoder(channels, n_time)
        self.fsq = FSQ(levels=list(levels), dim=channels)  # channel-first on [N, C, h, w]
        self.time_decoder = TimeDecoder(channels, n_time)
        self.frame_decoder = ImageDecoder(channels, n_space)  # z_NChw -> x_N3HW

    def quantize(self, z_BtChw: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """-> (zq_BtChw, indices_Bthw)."""
        B, t = z_BtChw.shape[:2]
        zq_NChw, idx_Nhw = self.fsq(z_BtChw.flatten(0, 1))
        return zq_NChw.unflatten(0, (B, t)), idx_Nhw.unflatten(0, (B, t))

    def forward(self, x_BT3HW: torch.Tensor) -> torch.Tensor:
        zq_BtChw, _ = self.quantize(self.time_encoder(per_frame(self.frame_encoder, x_BT3HW)))
        return per_frame(self.frame_decoder, self.time_decoder(zq_BtChw))

    def encode(self, x_BT3HW: torch.Tensor) -> torch.Tensor:
        return self.quantize(self.time_encoder(per_frame(self.frame_encoder, x_BT3HW)))[1]

    def decode(self, idx_Bthw: torch.Tensor) -> torch.Tensor:
        B, t = idx_Bthw.shape[:2]
        zq_BtChw = self.fsq.indices_to_codes(idx_Bthw.flatten(0, 1)).unflatten(0, (B, t))
        return per_frame(self.frame_decoder, self.time_decoder(zq_BtChw))


# ----------------------------------------------------------------------------- tokenizer
def padded_length(T: int, td: int) -> int:
    """Smallest 1 + k*td >= T."""
    return 1 + td * math.ceil((T - 1) / td)


def video_to_unit(frames_THW3: np.ndarray, size: int, td: int) -> torch.Tensor:
    """uint8 [T,H,W,3] -> float [1+k*td, 3, size, size] in [-1,1], the last frame repeated as padding."""
    x_T3HW = to_unit(frames_THW3, size)
    extra = padded_length(len(x_T3HW), td) - len(x_T3HW)
    if extra:
        x_T3HW = torch.cat([x_T3HW, x_T3HW[-1:].expand(extra, -1, -1, -1)])
    return x_T3HW


class CausalVideoTokenizer(ModelTokenizer):
    """Video -> (1 + ceil((T-1)/td)) grids of (size/sd)**2 codes, time-major."""

    family: ClassVar[str] = "causal_video"
    modality: ClassVar[str] = "video"
    defaults: ClassVar[dict[str, Any]] = {
        "size": 64, "spatial_downsample": 8, "temporal_downsample": 4, "levels": [8, 8, 8, 5, 5],
        "channels": 64, "steps": 1800, "batch_size": 8, "lr": 2e-3, "patience": 3, "eval_every": 100,
    }
    chunk: ClassVar[int] = 8  # clips per forward pass in encode_batch

    def __init__(self, params: dict | None = None, *, fitted_on: dict | None = None):
        super().__init__(params, fitted_on=fitted_on)
        p = self.params
        sd, td = p["spatial_downsample"], p["temporal_downsample"]
        if sd < 2 or sd & (sd - 1) or p["size"] % sd:
            raise RecipeError(f"causal_video: spatial_downsample must be a power of 2 dividing size; "
                              f"got size={p['size']} spatial_downsample={sd}")
        if td < 1 or td & (td - 1):
            raise RecipeError(f"causal_video: temporal_downsample must be a power of 2 (1, 2, 4, 8), got {td}")
        self.model = CausalVideoFSQ(p["levels"], p["channels"], sd, td).eval()

    @property
    def grid(self) -> list[int]:
        g = self.params["size"] // self.params["spatial_downsample"]
        return [g, g]

    def level_sizes(self) -> list[int]:
        return [int(np.prod(self.params["levels"]))]

    def tokens_per_unit(self) -> dict[str, float]:
        n = self.grid[0] * self.grid[1]
        return {"tokens_per_first_frame": n, "tokens_per_frame": n / self.params["temporal_downsample"]}

    # --- codec -------------------------------------------------------------------
    @torch.inference_mode()
    def encode_batch(self, xs: list) -> list[tuple[np.ndarray, dict]]:
        """Same-shape clips are stacked into one forward pass (``chunk`` clips at a time)."""
        videos = [as_video(v) for v in xs]
        p = self.params
        out: list[tuple[np.ndarray, dict] | None] = [None] * len(videos)
        with encode_precision(self.device):  # fp32 on CUDA: FSQ rounds, codes stay the CPU's
            for _, idxs in group_by_shape(videos).items():
                for k in range(0, len(idxs), self.chunk):
                    part = idxs[k : k + self.chunk]
                    x_BT3HW = torch.stack([video_to_unit(videos[i], p["size"], p["temporal_downsample"])
                                           for i in part])
                    idx_Bthw = self.model.encode(x_BT3HW.to(self.device)).cpu().to(torch.int32)
                    for row, i in zip(idx_Bthw.numpy(), part):
                        side = {"frames": int(len(videos[i])), "grid": list(self.grid),
                                "latent_frames": int(row.shape[0])}
                        out[i] = (row.reshape(-1), side)
        return out  # type: ignore[return-value]

    def encode(self, x: np.ndarray) -> tuple[np.ndarray, dict]:
        return self.encode_batch([x])[0]

    @torch.inference_mode()
    def decode(self, codes: np.ndarray, side: dict) -> np.ndarray:
        """-> uint8 [frames, size, size, 3]."""
        h, w = (int(g) for g in side.get("grid", self.grid))
        codes = self.check_codes(codes)
        t = int(side.get("latent_frames", len(codes) // (h * w)))
        if t * h * w != len(codes):
            raise ValueError(f"causal_video: {len(codes)} codes do not make {t} latent frames of {h}x{w}")
        idx_Bthw = torch.from_numpy(codes.reshape(1, t, h, w)).to(self.device)
        with decode_precision(self.device):  # bf16 autocast on CUDA, nothing on the CPU
            x_BT3HW = self.model.decode(idx_Bthw).float().cpu()
        T = int(side.get("frames", x_BT3HW.shape[1]))
        return to_uint8(x_BT3HW[0, :T])

    @classmethod
    def fit(
        cls,
        samples: list,
        params: dict,
        *,
        seed: int,
        log: Callable[[str], Any] = print,
        fitted_on: dict | None = None,
        images: list | None = None,
        image_tokenizer: Any = None,
        **resources: Any,
    ) -> "CausalVideoTokenizer":
        """Fit on uint8 videos [T,S,S,3]; see `video_causal_fit`.

        ``images``: still images (uint8 [H,W,3]) made into synthetic pans/zooms for more data;
        ``image_tokenizer``: a fitted `fsq_image` to build on (else a frame autoencoder is fitted).
        """
        return fit_causal_video(cls, samples, params, seed=seed, log=log, fitted_on=fitted_on,
                                images=images, image_tokenizer=image_tokenizer)
