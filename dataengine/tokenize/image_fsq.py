"""`fsq_image`: a small conv autoencoder with an FSQ bottleneck.

    image uint8 [S,S,3] -> x_B3HW in [-1,1] -> Encoder (strided convs) -> z_BChw
        -> FSQ(levels) -> one code per latent cell, raster order -> Decoder -> image

With the defaults a 64x64 image becomes an 8x8 grid of codes from an implicit
codebook of 8*5*5*5 = 1000 entries: 64 tokens per image. Trained on CPU in a
few minutes (MSE, AdamW, flips + random-resized crops) by the shared loop in
`training.py`: best weights kept, early stop on a held-out validation loss.

Size the codebook to the corpus: a small corpus cannot teach (or show, on a
held-out split) a thousand codes. ``entropy_weight > 0`` adds the codebook
entropy term of LFQ / MAGVIT-v2 (`soft_code_entropy`), which spreads the
batch's code usage over the whole codebook; validation stays pure MSE.
"""
from __future__ import annotations

import math
from typing import Any, Callable, ClassVar

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F
from vector_quantize_pytorch import FSQ

from dataengine.errors import RecipeError, RejectError
from dataengine.tokenize.base import (
    ModelTokenizer, resolve_params, seeded,
)
from dataengine.tokenize.precision import decode_precision, encode_precision
from dataengine.tokenize.training import n_validation, train


def _norm(c: int) -> nn.GroupNorm:
    return nn.GroupNorm(math.gcd(8, c), c)


class ResBlock(nn.Module):
    """x + conv(silu(norm(conv(silu(norm(x))))))."""

    def __init__(self, c: int):
        super().__init__()
        self.block = nn.Sequential(
            _norm(c), nn.SiLU(), nn.Conv2d(c, c, 3, padding=1),
            _norm(c), nn.SiLU(), nn.Conv2d(c, c, 3, padding=1),
        )

    def forward(self, x_BCHW: torch.Tensor) -> torch.Tensor:
        return x_BCHW + self.block(x_BCHW)


def _widths(channels: int, n_down: int) -> list[int]:
    """Channel width after each downsampling stage: narrow at high resolution."""
    return [max(32, channels // 2 ** (n_down - 1 - i)) for i in range(n_down)]


class Encoder(nn.Module):
    """x_B3HW -> z_BChw with h = H / 2**n_down (`in_ch` input channels: 3 for RGB, 2 for depth + mask)."""

    def __init__(self, channels: int, n_down: int, in_ch: int = 3):
        super().__init__()
        w = _widths(channels, n_down)
        layers: list[nn.Module] = [nn.Conv2d(in_ch, w[0] // 2, 3, padding=1)]
        c_in = w[0] // 2
        for i, c in enumerate(w):
            layers += [nn.Conv2d(c_in, c, 4, stride=2, padding=1), _norm(c), nn.SiLU()]
            if i >= n_down - 3:  # residual blocks at the three coarsest scales
                layers.append(ResBlock(c))
            c_in = c
        layers += [_norm(c_in), nn.SiLU(), nn.Conv2d(c_in, channels, 1)]
        self.net = nn.Sequential(*layers)

    def forward(self, x_B3HW: torch.Tensor) -> torch.Tensor:
        return self.net(x_B3HW)


class Decoder(nn.Module):
    """zq_BChw -> x_B3HW (nearest upsampling + conv at each stage; `out_ch` output channels)."""

    def __init__(self, channels: int, n_down: int, out_ch: int = 3):
        super().__init__()
        w = _widths(channels, n_down)[::-1]
        layers: list[nn.Module] = [nn.Conv2d(channels, w[0], 3, padding=1), ResBlock(w[0])]
        for i, c in enumerate(w):
            c_out = w[i + 1] if i + 1 < len(w) else w[-1] // 2
            layers += [nn.Upsample(scale_factor=2, mode="nearest"),
                       nn.Conv2d(c, c_out, 3, padding=1), _norm(c_out), nn.SiLU()]
            if i == 0 and n_down > 1:
                layers.append(ResBlock(c_out))
        layers += [nn.Conv2d(w[-1] // 2, out_ch, 3, padding=1)]
        self.net = nn.Sequential(*layers)

    def forward(self, z_BChw: torch.Tensor) -> torch.Tensor:
        return self.net(z_BChw)


class FSQAutoencoder(nn.Module):
    """Encoder -> FSQ -> Decoder; ``encode`` gives indices_Bhw, ``decode`` takes them back."""

    def __init__(self, levels: list[int], channels: int, downsample: int, in_ch: int = 3, out_ch: int = 3):
        super().__init__()
        n_down = int(round(math.log2(downsample)))
        self.encoder = Encoder(channels, n_down, in_ch)
        self.fsq = FSQ(levels=list(levels), dim=channels)  # projects C -> len(levels) and back
        self.decoder = Decoder(channels, n_down, out_ch)

    def forward(self, x_B3HW: torch.Tensor) -> torch.Tensor:
        zq_BChw, _ = self.fsq(self.encoder(x_B3HW))
        return self.decoder(zq_BChw)

    def encode(self, x_B3HW: torch.Tensor) -> torch.Tensor:
        _, idx_Bhw = self.fsq(self.encoder(x_B3HW))
        return idx_Bhw

    def decode(self, idx_Bhw: torch.Tensor) -> torch.Tensor:
        zq_BChw = self.fsq.indices_to_codes(idx_Bhw)
        return self.decoder(zq_BChw)


def to_unit(imgs_BHW3: np.ndarray | torch.Tensor, size: int) -> torch.Tensor:
    """uint8 [B,H,W,3] -> float [B,3,size,size] in [-1,1] (antialiased resize if needed)."""
    x = torch.as_tensor(np.ascontiguousarray(imgs_BHW3)).permute(0, 3, 1, 2).float()
    x = x / 127.5 - 1.0
    if x.shape[-2:] != (size, size):
        x = F.interpolate(x, size=(size, size), mode="bilinear", antialias=True, align_corners=False)
    return x.clamp(-1, 1)


def to_uint8(x_B3HW: torch.Tensor) -> np.ndarray:
    """float [-1,1] [B,3,H,W] -> uint8 [B,H,W,3]."""
    x = ((x_B3HW.clamp(-1, 1) + 1.0) * 127.5).round().to(torch.uint8)
    return x.permute(0, 2, 3, 1).contiguous().numpy()


def as_rgb(img: Any) -> np.ndarray:
    """uint8 [H,W,3]; grayscale and RGBA are converted, anything else is rejected."""
    a = np.asarray(img)
    if a.ndim == 2:
        a = np.repeat(a[:, :, None], 3, axis=2)
    if a.ndim != 3 or a.shape[2] not in (3, 4) or min(a.shape[:2]) < 1:
        raise RejectError("bad_image_shape", f"expected uint8 [H,W,3], got shape {a.shape}")
    if a.dtype != np.uint8:
        raise RejectError("bad_image_dtype", f"expected uint8, got {a.dtype}")
    return a[:, :, :3]


def soft_code_entropy(fsq: FSQ, z_BChw: torch.Tensor, sigma: float = 0.5) -> torch.Tensor:
    """Normalised entropy (0..1) of the batch's average soft code assignment (codebook usage).

    Each latent cell's bounded, pre-rounding value is softly assigned to the
    levels of each FSQ dimension (Gaussian weights, ``sigma`` in level units);
    the joint assignment is the outer product over dimensions (the codebook is
    their product), averaged over the batch. 1 means every code equally used
    in the batch; maximising it spreads usage over the codebook (the codebook
    entropy term of LFQ / MAGVIT-v2, made differentiable for FSQ).
    """
    z_ND = fsq.project_in(z_BChw.permute(0, 2, 3, 1).reshape(-1, z_BChw.shape[1]))
    levels = fsq._levels.to(z_ND.dtype)
    half_l = (levels - 1) * (1 + 1e-3) / 2
    offset = torch.where(fsq._levels % 2 == 0, 0.5, 0.0).to(z_ND.dtype)
    bounded_ND = torch.tanh(z_ND + torch.atanh(offset / half_l)) * half_l - offset  # as FSQ.bound, unrounded
    joint_NK = torch.ones(len(z_ND), 1, dtype=z_ND.dtype, device=z_ND.device)
    for d, n_levels in enumerate(fsq._levels.tolist()):
        grid_L = torch.arange(n_levels, dtype=z_ND.dtype, device=z_ND.device) - n_levels // 2
        p_NL = torch.softmax(-((bounded_ND[:, d : d + 1] - grid_L) ** 2) / (2 * sigma**2), dim=1)
        joint_NK = (joint_NK[:, :, None] * p_NL[:, None, :]).flatten(1)
    avg_K = joint_NK.mean(0)
    return -(avg_K * torch.log(avg_K + 1e-12)).sum() / math.log(avg_K.numel())


def _augment(x_B3HW: torch.Tensor, g: torch.Generator) -> torch.Tensor:
    """Random horizontal flips and random-resized crops (scale 0.6..1), per image."""
    B, _, H, W = x_B3HW.shape
    out = []
    for i in range(B):
        xi = x_B3HW[i : i + 1]
        if torch.rand(1, generator=g).item() < 0.5:
            xi = xi.flip(-1)
        s = 0.6 + 0.4 * torch.rand(1, generator=g).item()
        ch, cw = max(8, int(H * s)), max(8, int(W * s))
        top = int(torch.randint(0, H - ch + 1, (1,), generator=g))
        left = int(torch.randint(0, W - cw + 1, (1,), generator=g))
        xi = xi[:, :, top : top + ch, left : left + cw]
        if (ch, cw) != (H, W):
            xi = F.interpolate(xi, size=(H, W), mode="bilinear", align_corners=False)
        out.append(xi)
    return torch.cat(out)


class FSQImageTokenizer(ModelTokenizer):
    """Image -> ``(size/downsample)**2`` codes from an implicit FSQ codebook."""

    family: ClassVar[str] = "fsq_image"
    modality: ClassVar[str] = "image"
    defaults: ClassVar[dict[str, Any]] = {
        "size": 64, "downsample": 8, "levels": [8, 5, 5, 5], "channels": 64,
        "steps": 800, "batch_size": 32, "lr": 2e-3, "patience": 3, "eval_every": 50,
        "entropy_weight": 0.0,  # > 0: add weight * (1 - codebook entropy of the batch) to the loss
    }
    chunk: ClassVar[int] = 16  # images per forward pass on the CPU (64: 1.5x slower, cache-bound)
    gpu_chunk: ClassVar[int] = 512  # ... and on an accelerator

    def __init__(self, params: dict | None = None, *, fitted_on: dict | None = None):
        super().__init__(params, fitted_on=fitted_on)
        p = self.params
        ds = p["downsample"]
        if ds < 2 or ds & (ds - 1) or p["size"] % ds:
            raise RecipeError(
                f"fsq_image: downsample must be a power of 2 dividing size; got "
                f"size={p['size']} downsample={p['downsample']}"
            )
        self.model = FSQAutoencoder(p["levels"], p["channels"], p["downsample"]).eval()

    @property
    def grid(self) -> list[int]:
        g = self.params["size"] // self.params["downsample"]
        return [g, g]

    def level_sizes(self) -> list[int]:
        return [int(np.prod(self.params["levels"]))]

    def tokens_per_unit(self) -> dict[str, float]:
        return {"tokens_per_image": self.grid[0] * self.grid[1]}

    # --- batched core: used by encode/decode and by the `frames` family ---------
    def _chunk(self) -> int:
        return self.chunk if self.device.type == "cpu" else self.gpu_chunk

    @torch.inference_mode()
    def encode_images(self, imgs: list[np.ndarray] | np.ndarray) -> np.ndarray:
        """uint8 images (any sizes) -> int32 codes [N, h*w] in raster order; one forward per chunk.

        Full fp32 on CUDA (no TF32, no autocast): FSQ rounds, so codes stay the CPU's.
        """
        rgb = [as_rgb(im) for im in imgs]
        out, size, chunk = [], self.params["size"], self._chunk()
        with encode_precision(self.device):
            for i in range(0, len(rgb), chunk):
                part = rgb[i : i + chunk]
                x_B3HW = torch.cat([to_unit(im[None], size) for im in part])
                idx_Bhw = self.model.encode(x_B3HW.to(self.device)).cpu()
                out.append(idx_Bhw.reshape(len(part), -1).to(torch.int32).numpy())
        return np.concatenate(out) if out else np.zeros((0, self.grid[0] * self.grid[1]), np.int32)

    @torch.inference_mode()
    def decode_images(self, codes_Nn: np.ndarray, grid: list[int]) -> np.ndarray:
        """int codes [N, h*w] -> uint8 images [N, h*ds, w*ds, 3]; bf16 autocast on CUDA."""
        h, w = int(grid[0]), int(grid[1])
        codes = self.check_codes(codes_Nn).reshape(-1, h, w)
        out, chunk = [], self._chunk()
        for i in range(0, len(codes), chunk):
            idx_Bhw = torch.from_numpy(codes[i : i + chunk]).to(self.device)
            with decode_precision(self.device):
                x_B3HW = self.model.decode(idx_Bhw)
            out.append(to_uint8(x_B3HW.float().cpu()))
        return np.concatenate(out) if out else np.zeros((0, h * self.params["downsample"],
                                                         w * self.params["downsample"], 3), np.uint8)

    def encode(self, x: np.ndarray) -> tuple[np.ndarray, dict]:
        return self.encode_images([x])[0], {"grid": self.grid}

    def encode_batch(self, xs: list) -> list[tuple[np.ndarray, dict]]:
        codes = self.encode_images(xs)
        return [(c, {"grid": self.grid}) for c in codes]

    def decode(self, codes: np.ndarray, side: dict) -> np.ndarray:
        grid = side.get("grid", self.grid)
        return self.decode_images(np.asarray(codes).reshape(1, -1), grid)[0]

    def decode_batch(self, items: list[tuple[np.ndarray, dict]]) -> list[np.ndarray]:
        """Images of the same grid decode together, one forward pass per chunk."""
        out: list[np.ndarray | None] = [None] * len(items)
        groups: dict[tuple, list[int]] = {}
        for i, (_, side) in enumerate(items):
            groups.setdefault(tuple(side.get("grid", self.grid)), []).append(i)
        for grid, idxs in groups.items():
            imgs = self.decode_images(np.stack([np.asarray(items[i][0]).reshape(-1) for i in idxs]), list(grid))
            for i, img in zip(idxs, imgs):
                out[i] = img
        return out  # type: ignore[return-value]

    # --- training ------------------------------------------------------------
    @classmethod
    def fit(
        cls,
        samples: list,
        params: dict,
        *,
        seed: int,
        log: Callable[[str], Any] = print,
        fitted_on: dict | None = None,
        **resources: Any,
    ) -> "FSQImageTokenizer":
        """Train the autoencoder on uint8 images (MSE); keeps the best weights.

        The first ~10% of the images (at most 64) are held out for validation
        and never trained on; training stops early when their loss stalls.
        """
        p = resolve_params(cls.family, cls.defaults, params)
        if not samples:
            raise RecipeError("fsq_image: no images to fit on; add image inputs to the corpus")
        data_N3HW = torch.cat([to_unit(as_rgb(im)[None], p["size"]) for im in samples])
        n_val = n_validation(len(data_N3HW))
        val_B3HW, train_N3HW = data_N3HW[:n_val], data_N3HW[n_val:]

        def draw(g: torch.Generator) -> torch.Tensor:
            pick = torch.randint(0, len(train_N3HW), (p["batch_size"],), generator=g)
            return _augment(train_N3HW[pick], g)

        w_ent = float(p["entropy_weight"])

        def loss_fn(model: nn.Module, x_B3HW: torch.Tensor) -> torch.Tensor:
            if not (w_ent > 0 and model.training):  # validation: reconstruction only
                return F.mse_loss(model(x_B3HW), x_B3HW)
            z_BChw = model.encoder(x_B3HW)
            zq_BChw, _ = model.fsq(z_BChw)
            mse = F.mse_loss(model.decoder(zq_BChw), x_B3HW)
            return mse + w_ent * (1.0 - soft_code_entropy(model.fsq, z_BChw))

        with seeded(seed):
            tok = cls(p)
            run = train(tok.model, draw, loss_fn, [val_B3HW] if n_val else [], steps=p["steps"],
                        lr=p["lr"], generator=torch.Generator().manual_seed(seed),
                        patience=p["patience"], eval_every=p["eval_every"], log=log, tag="fsq_image")
            tok.model.load_state_dict(run.state)
            tok.model.eval()
        best = run.facts["best_val_loss"]
        log(f"[fsq_image] done at step {run.facts['steps_run']}/{p['steps']}: best val mse {best:.4f} "
            f"({10 * math.log10(4.0 / max(best, 1e-10)):.1f} dB) at step {run.facts['best_step']}, "
            f"{run.facts['seconds']}s")
        tok.fitted_on = {"n_samples": len(samples), "n_val": n_val, "seed": seed,
                         **run.card_facts(), **(fitted_on or {})}
        return tok
