"""`fsq_depth`: metric depth maps -> FSQ codes, a small conv autoencoder (as 4M's depth tokenizer).

    depth metres [H,W] -> resize_depth -> [S,S] -> per-map normalised log-depth x + validity mask
        -> x_B2HW -> Encoder (strided convs) -> z_BChw -> FSQ(levels) -> codes, raster order
        -> Decoder -> y_B1HW -> exp(denormalise(y)) -> depth metres [S,S], every pixel > 0

Normalisation, per map over its valid pixels: ``lo``/``hi`` = 2nd/98th percentile of
ln(depth metres); ``x = 2 (ln d - lo) / (hi - lo) - 1`` clipped to [-1.5, 1.5]; invalid pixels
are x = 0 with mask 0. ``lo``/``hi`` travel in the side info (``log_lo``/``log_hi``, rounded
to float32: 64 bits), so decode returns metres. Scale-free: the codes describe the SHAPE of
the scene, the side info its metric range. Training loss: L1 on x over valid pixels only.
"""
from __future__ import annotations

from typing import Any, Callable, ClassVar

import numpy as np
import torch
import torch.nn as nn

from dataengine.errors import RecipeError, RejectError
from dataengine.modalities.depth.decode import resize_depth
from dataengine.tokenize.base import ModelTokenizer, resolve_params, seeded
from dataengine.tokenize.image_fsq import FSQAutoencoder  # the image model, 2 channels in (log-depth, mask), 1 out
from dataengine.tokenize.precision import decode_precision, encode_precision
from dataengine.tokenize.training import n_validation, train

CLIP = 1.5  # normalised log-depth range kept: the 2..98% span maps to [-1, 1], tails to +-1.5
PCT_LO, PCT_HI = 2.0, 98.0  # percentiles of log-depth that set the per-map range


def log_range(depth_SS: np.ndarray) -> tuple[float, float]:
    """(lo, hi): 2nd/98th percentiles of ln(depth) over valid pixels, float32-rounded; hi > lo."""
    valid = depth_SS > 0
    if not valid.any():
        raise RejectError("no_valid_depth", "no valid depth pixel inside the centre square crop; "
                                            "crop or pad the map so its valid region is central")
    lo, hi = np.percentile(np.log(depth_SS[valid].astype(np.float64)), [PCT_LO, PCT_HI])
    lo = float(np.float32(lo))
    hi = float(np.float32(hi))
    if hi <= lo:
        hi = float(np.float32(lo + 1e-3))
    return lo, hi


def normalise(depth_SS: np.ndarray) -> tuple[np.ndarray, dict]:
    """Resized metres [S,S] -> (float32 [2,S,S]: normalised log-depth, mask; side log range)."""
    lo, hi = log_range(depth_SS)
    valid = depth_SS > 0
    logd = np.log(np.where(valid, depth_SS, 1.0).astype(np.float64))
    x = np.clip(2.0 * (logd - lo) / (hi - lo) - 1.0, -CLIP, CLIP)
    x_2SS = np.stack([np.where(valid, x, 0.0), valid.astype(np.float64)]).astype(np.float32)
    return x_2SS, {"log_lo": lo, "log_hi": hi}


def denormalise(y_SS: np.ndarray, log_lo: float, log_hi: float) -> np.ndarray:
    """Normalised log-depth [S,S] -> float32 metres, every pixel > 0."""
    y = np.clip(np.asarray(y_SS, dtype=np.float64), -CLIP, CLIP)
    return np.exp((y + 1.0) / 2.0 * (log_hi - log_lo) + log_lo).astype(np.float32)


def as_depth(x: Any) -> np.ndarray:
    """A float [H, W] metres map, or a RejectError naming the expected form."""
    a = np.asarray(x)
    if a.ndim != 2 or min(a.shape) < 1 or a.dtype.kind not in "fiu":
        raise RejectError("bad_depth_shape", f"expected a float32 depth map [H, W] in metres, "
                                             f"got {a.dtype} {a.shape}")
    return a


class FSQDepthTokenizer(ModelTokenizer):
    """Depth map (metres) -> ``(size/downsample)**2`` codes + its log-depth range as side info."""

    family: ClassVar[str] = "fsq_depth"
    modality: ClassVar[str] = "depth"
    defaults: ClassVar[dict[str, Any]] = {
        "size": 64,  # pixels per side after the centre crop: fsq_image's size, so RGB and depth align
        "downsample": 8,  # 8x8 grid = 64 tokens per map, one per 8x8 patch (fsq_image's layout)
        "levels": [8, 5, 5, 5],  # 1000 implicit codes (~10 bits/token): depth is smoother than RGB
        "channels": 64,  # latent width: a few-hundred-k parameter model, minutes on a CPU
        "steps": 600,  # fewer than fsq_image's 800: one channel converges sooner
        "batch_size": 32,  # maps per step: fsq_image's, stable AdamW at this lr
        "lr": 2e-3,  # peak AdamW lr (cosine schedule in training.train), as fsq_image
        "patience": 3,  # evaluations without 1% validation improvement before stopping early
        "eval_every": 50,  # steps between validation losses (and best-weights checkpoints)
    }
    chunk: ClassVar[int] = 16  # maps per forward pass on the CPU
    gpu_chunk: ClassVar[int] = 512  # ... and on an accelerator

    def __init__(self, params: dict | None = None, *, fitted_on: dict | None = None):
        super().__init__(params, fitted_on=fitted_on)
        p = self.params
        ds = p["downsample"]
        if ds < 2 or ds & (ds - 1) or p["size"] % ds:
            raise RecipeError(f"fsq_depth: downsample must be a power of 2 dividing size; got "
                              f"size={p['size']} downsample={p['downsample']}")
        self.model = FSQAutoencoder(p["levels"], p["channels"], p["downsample"], in_ch=2, out_ch=1).eval()

    @property
    def grid(self) -> list[int]:
        g = self.params["size"] // self.params["downsample"]
        return [g, g]

    def level_sizes(self) -> list[int]:
        return [int(np.prod(self.params["levels"]))]

    def tokens_per_unit(self) -> dict[str, float]:
        return {"tokens_per_depth_map": self.grid[0] * self.grid[1]}

    def _chunk(self) -> int:
        return self.chunk if self.device.type == "cpu" else self.gpu_chunk

    def prepare(self, x: Any) -> tuple[np.ndarray, dict]:
        """Metres [H, W] (any size) -> (float32 [2, S, S] model input, side info)."""
        x_2SS, rng = normalise(resize_depth(as_depth(x), self.params["size"]))
        return x_2SS, {"grid": self.grid, **rng}

    # --- codec ---------------------------------------------------------------
    @torch.inference_mode()
    def encode_batch(self, xs: list) -> list[tuple[np.ndarray, dict]]:
        """Metres maps (any sizes) -> [(int32 codes [h*w] raster order, side)]; one forward per chunk.

        Full fp32 on CUDA (no TF32): FSQ rounds, so codes stay the CPU's.
        """
        prepared = [self.prepare(x) for x in xs]
        out: list[tuple[np.ndarray, dict]] = []
        chunk = self._chunk()
        with encode_precision(self.device):
            for i in range(0, len(prepared), chunk):
                part = prepared[i : i + chunk]
                x_B2HW = torch.from_numpy(np.stack([x for x, _ in part]))
                idx_Bhw = self.model.encode(x_B2HW.to(self.device)).cpu()
                codes_Bn = idx_Bhw.reshape(len(part), -1).to(torch.int32).numpy()
                out += [(c, side) for c, (_, side) in zip(codes_Bn, part)]
        return out

    def encode(self, x: np.ndarray) -> tuple[np.ndarray, dict]:
        return self.encode_batch([x])[0]

    @torch.inference_mode()
    def decode_batch(self, items: list[tuple[np.ndarray, dict]]) -> list[np.ndarray]:
        """[(codes, side)] -> float32 metres [h*ds, w*ds]; same-grid maps decode together."""
        out: list[np.ndarray | None] = [None] * len(items)
        groups: dict[tuple, list[int]] = {}
        for i, (_, side) in enumerate(items):
            groups.setdefault(tuple(side.get("grid", self.grid)), []).append(i)
        chunk = self._chunk()
        for (h, w), idxs in groups.items():
            codes = np.stack([self.check_codes(items[i][0]) for i in idxs]).reshape(-1, h, w)
            for j in range(0, len(idxs), chunk):
                idx_Bhw = torch.from_numpy(codes[j : j + chunk]).to(self.device)
                with decode_precision(self.device):
                    y_B1HW = self.model.decode(idx_Bhw)
                y_BHW = y_B1HW.float().cpu()[:, 0].numpy()
                for i, y in zip(idxs[j : j + chunk], y_BHW):
                    side = items[i][1]
                    out[i] = denormalise(y, float(side["log_lo"]), float(side["log_hi"]))
        return out  # type: ignore[return-value]

    def decode(self, codes: np.ndarray, side: dict) -> np.ndarray:
        return self.decode_batch([(codes, side)])[0]

    # --- training ------------------------------------------------------------
    @staticmethod
    def masked_l1(model: nn.Module, x_B2HW: torch.Tensor) -> torch.Tensor:
        """L1 between decoded and input normalised log-depth over valid pixels (mask channel)."""
        y_B1HW = model(x_B2HW)
        m_B1HW = x_B2HW[:, 1:2]
        return ((y_B1HW - x_B2HW[:, :1]).abs() * m_B1HW).sum() / m_B1HW.sum().clamp_min(1.0)

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
    ) -> "FSQDepthTokenizer":
        """Train on float32 metres maps (masked L1 on normalised log-depth); keeps the best weights.

        The first ~10% of the usable maps (at most 64) are held out for validation and
        never trained on; training stops early when their loss stalls. Maps with no
        valid pixel inside the centre crop are skipped (counted in ``fitted_on``).
        """
        p = resolve_params(cls.family, cls.defaults, params)
        probe = cls(p)
        xs, skipped = [], 0
        for s in samples:
            try:
                xs.append(probe.prepare(s)[0])
            except RejectError:
                skipped += 1
        if not xs:
            raise RecipeError("fsq_depth: no depth maps with valid pixels to fit on; "
                              "add depth inputs (.depth.png / .depth.npy) to the corpus")
        data_N2HW = torch.from_numpy(np.stack(xs))
        n_val = n_validation(len(data_N2HW))
        val_B2HW, train_N2HW = data_N2HW[:n_val], data_N2HW[n_val:]

        def draw(g: torch.Generator) -> torch.Tensor:
            pick = torch.randint(0, len(train_N2HW), (p["batch_size"],), generator=g)
            x_B2HW = train_N2HW[pick]
            flip_B = torch.rand(len(pick), generator=g) < 0.5  # random horizontal flips
            return torch.where(flip_B[:, None, None, None], x_B2HW.flip(-1), x_B2HW)

        with seeded(seed):
            tok = cls(p)
            run = train(tok.model, draw, cls.masked_l1, [val_B2HW] if n_val else [], steps=p["steps"],
                        lr=p["lr"], generator=torch.Generator().manual_seed(seed),
                        patience=p["patience"], eval_every=p["eval_every"], log=log, tag="fsq_depth")
            tok.model.load_state_dict(run.state)
            tok.model.eval()
        log(f"[fsq_depth] done at step {run.facts['steps_run']}/{p['steps']}: best val L1 "
            f"{run.facts['best_val_loss']:.4f} (normalised log-depth) at step {run.facts['best_step']}, "
            f"{run.facts['seconds']}s")
        tok.fitted_on = {"n_samples": len(samples), "n_skipped": skipped, "n_val": n_val, "seed": seed,
                         **run.card_facts(), **(fitted_on or {})}
        return tok
