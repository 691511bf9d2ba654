"""`mel_fsq`: audio as FSQ codes of a log-mel spectrogram.

    wave float32 [N] @ sample_rate -> log-mel [M, n] (normalised per mel bin)
        -> 1-D conv encoder, stride-2 convs down by time_downsample -> z_BCt
        -> FSQ(levels) -> one code per latent step -> decoder (transposed convs)
        -> log-mel -> InverseMelScale + GriffinLim -> wave

Defaults: 16 kHz, hop 256 -> 62.5 mel frames/s, /4 -> 15.625 tokens/s from an
implicit codebook of 1000 entries. Not a high-fidelity codec: a cheap,
trainable-anywhere audio vocabulary (use `encodec` when a checkpoint exists).
"""
from __future__ import annotations

import math
from typing import Any, Callable, ClassVar

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F
import torchaudio.transforms as TT
from vector_quantize_pytorch import FSQ

from dataengine.errors import RecipeError, RejectError
from dataengine.tokenize.base import (
    ModelTokenizer, resolve_params, seeded,
)
from dataengine.tokenize.masked import Unsupported, length_buckets, masked_forward
from dataengine.tokenize.precision import decode_precision, encode_precision
from dataengine.tokenize.training import n_validation, train

LOG_EPS = 1e-5


def _norm(c: int) -> nn.GroupNorm:
    return nn.GroupNorm(math.gcd(8, c), c)


class ResBlock1d(nn.Module):
    def __init__(self, c: int):
        super().__init__()
        self.block = nn.Sequential(
            _norm(c), nn.SiLU(), nn.Conv1d(c, c, 3, padding=1),
            _norm(c), nn.SiLU(), nn.Conv1d(c, c, 3, padding=1),
        )

    def forward(self, x_BCT: torch.Tensor) -> torch.Tensor:
        return x_BCT + self.block(x_BCT)


class MelFSQ(nn.Module):
    """Normalised log-mel x_BMT <-> FSQ indices_Bt, t = T / 2**n_down."""

    def __init__(self, n_mels: int, channels: int, levels: list[int], time_downsample: int):
        super().__init__()
        n_down = int(round(math.log2(time_downsample)))
        C = channels
        enc: list[nn.Module] = [nn.Conv1d(n_mels, C, 3, padding=1), ResBlock1d(C)]
        for _ in range(n_down):
            enc += [nn.Conv1d(C, C, 4, stride=2, padding=1), _norm(C), nn.SiLU(), ResBlock1d(C)]
        enc += [_norm(C), nn.SiLU(), nn.Conv1d(C, C, 1)]
        dec: list[nn.Module] = [nn.Conv1d(C, C, 3, padding=1), ResBlock1d(C)]
        for _ in range(n_down):
            dec += [nn.ConvTranspose1d(C, C, 4, stride=2, padding=1), _norm(C), nn.SiLU(), ResBlock1d(C)]
        dec += [_norm(C), nn.SiLU(), nn.Conv1d(C, n_mels, 3, padding=1)]
        self.encoder = nn.Sequential(*enc)
        self.fsq = FSQ(levels=list(levels), dim=C, channel_first=True)
        self.decoder = nn.Sequential(*dec)
        # log-mel statistics of the fitting corpus, saved with the weights
        self.register_buffer("mel_mean", torch.zeros(n_mels))
        self.register_buffer("mel_std", torch.ones(n_mels))

    def normalize(self, logmel_BMT: torch.Tensor) -> torch.Tensor:
        return (logmel_BMT - self.mel_mean[:, None]) / self.mel_std[:, None]

    def denormalize(self, x_BMT: torch.Tensor) -> torch.Tensor:
        return x_BMT * self.mel_std[:, None] + self.mel_mean[:, None]

    def forward(self, x_BMT: torch.Tensor) -> torch.Tensor:
        zq_BCt, _ = self.fsq(self.encoder(x_BMT))
        return self.decoder(zq_BCt)

    def encode(self, x_BMT: torch.Tensor) -> torch.Tensor:
        _, idx_Bt = self.fsq(self.encoder(x_BMT))
        return idx_Bt

    def decode(self, idx_Bt: torch.Tensor) -> torch.Tensor:
        return self.decoder(self.fsq.indices_to_codes(idx_Bt))


def as_mono(wave: Any) -> np.ndarray:
    """float32 [N]; [N,c]/[c,N] with c<=8 channels are averaged; bad input is rejected."""
    a = np.asarray(wave, dtype=np.float32)
    if a.ndim == 2 and min(a.shape) <= 8:
        a = a.mean(axis=int(np.argmin(a.shape)))
    if a.ndim != 1 or a.size == 0:
        raise RejectError("bad_audio_shape", f"expected mono float32 [N], got shape {np.shape(wave)}")
    if not np.isfinite(a).all():
        raise RejectError("non_finite_audio", "waveform has NaN or inf samples")
    return a


class MelFSQTokenizer(ModelTokenizer):
    """Audio -> ``ceil(mel_frames / time_downsample)`` codes."""

    family: ClassVar[str] = "mel_fsq"
    modality: ClassVar[str] = "audio"
    defaults: ClassVar[dict[str, Any]] = {
        "sample_rate": 16000, "n_fft": 1024, "hop": 256, "n_mels": 64, "time_downsample": 4,
        "levels": [8, 5, 5, 5], "channels": 128, "steps": 600, "batch_size": 16,
        "segment_frames": 64, "lr": 2e-3, "patience": 3, "eval_every": 50,
    }

    def __init__(self, params: dict | None = None, *, fitted_on: dict | None = None):
        super().__init__(params, fitted_on=fitted_on)
        p = self.params
        td = p["time_downsample"]
        if td < 1 or td & (td - 1):
            raise RecipeError(f"mel_fsq: time_downsample must be a power of 2, got {td}")
        self.model = MelFSQ(p["n_mels"], p["channels"], p["levels"], td).eval()
        self.mel = TT.MelSpectrogram(
            sample_rate=p["sample_rate"], n_fft=p["n_fft"], hop_length=p["hop"],
            n_mels=p["n_mels"], power=2.0, center=True,
        )

    def level_sizes(self) -> list[int]:
        return [int(np.prod(self.params["levels"]))]

    def tokens_per_unit(self) -> dict[str, float]:
        p = self.params
        return {"tokens_per_second": p["sample_rate"] / p["hop"] / p["time_downsample"]}

    # --- features -------------------------------------------------------------
    def log_mel(self, wave: np.ndarray) -> torch.Tensor:
        """mono float32 [N] -> log-mel [M, 1 + max(N, n_fft) // hop]."""
        x = torch.from_numpy(as_mono(wave))
        if len(x) < self.params["n_fft"]:  # reflect padding needs a few samples
            x = F.pad(x, (0, self.params["n_fft"] - len(x)))
        return torch.log(self.mel(x) + LOG_EPS)

    def _pad_time(self, x_BMT: torch.Tensor) -> torch.Tensor:
        td = self.params["time_downsample"]
        extra = (-x_BMT.shape[-1]) % td
        return F.pad(x_BMT, (0, extra), mode="replicate") if extra else x_BMT

    # --- codec ------------------------------------------------------------------
    bucket_items: ClassVar[int] = 32  # clips per forward pass (similar lengths, see masked.py)

    @torch.inference_mode()
    def encode_batch(self, xs: list) -> list[tuple[np.ndarray, dict]]:
        """Clips bucketed by length, one forward pass per bucket, codes as one at a time.

        Each clip's normalised log-mel is padded to its bucket's longest; the
        encoder runs masked (zeros past each clip's end before every conv, GroupNorm
        over its own frames: ``masked.masked_forward``) and the codes are trimmed.
        """
        waves = [as_mono(x) for x in xs]
        mels = [self.log_mel(w) for w in waves]  # each [M, n_i], on the CPU
        td = self.params["time_downsample"]
        out: list[tuple[np.ndarray, dict] | None] = [None] * len(waves)
        padded = [m.shape[-1] + (-m.shape[-1]) % td for m in mels]
        with encode_precision(self.device):
            for idxs in length_buckets(padded, max_items=self.bucket_items):
                for i, row in zip(idxs, self._encode_bucket([mels[i] for i in idxs])):
                    out[i] = (row, {"mel_frames": int(mels[i].shape[-1]), "samples": int(len(waves[i]))})
        return out  # type: ignore[return-value]

    def _encode_bucket(self, mels: list[torch.Tensor]) -> list[np.ndarray]:
        """log-mels [M, n_i] -> int32 codes [ceil(n_i / td)] each, in one masked forward pass."""
        xs = [self._pad_time(self.model.normalize(m[None].to(self.device)))[0] for m in mels]
        lengths = torch.tensor([x.shape[-1] for x in xs], device=self.device)
        T = int(lengths.max())
        x_BMT = torch.stack([F.pad(x, (0, T - x.shape[-1])) for x in xs])
        try:
            z_BCt, z_len = masked_forward(self.model.encoder, x_BMT, lengths, residual=(ResBlock1d,))
        except Unsupported:  # an encoder masked_forward does not know: same-length groups only
            return [self.model.encode(x[None])[0].cpu().to(torch.int32).numpy() for x in xs]
        _, idx_Bt = self.model.fsq(z_BCt)  # per time step: padding cannot reach valid steps
        idx_Bt = idx_Bt.cpu().to(torch.int32)
        return [idx_Bt[b, : int(n)].numpy() for b, n in enumerate(z_len.tolist())]

    def encode(self, x: np.ndarray) -> tuple[np.ndarray, dict]:
        return self.encode_batch([x])[0]

    @torch.inference_mode()
    def decode_mel(self, codes: np.ndarray, side: dict) -> np.ndarray:
        """codes -> log-mel [n_mels, mel_frames] (natural log of the power mel + 1e-5)."""
        idx_Bt = torch.from_numpy(self.check_codes(codes)).reshape(1, -1).to(self.device)
        with decode_precision(self.device):  # bf16 on CUDA: the log-mel is continuous
            x_BMT = self.model.decode(idx_Bt)
        logmel_BMT = self.model.denormalize(x_BMT.float()).cpu()
        n = int(side.get("mel_frames", logmel_BMT.shape[-1]))
        return logmel_BMT[0, :, :n].numpy()

    @torch.inference_mode()
    def decode(self, codes: np.ndarray, side: dict) -> np.ndarray:
        """codes -> float32 waveform at sample_rate (InverseMelScale + 32 GriffinLim iterations)."""
        p = self.params
        logmel_MT = torch.from_numpy(self.decode_mel(codes, side))
        power_MT = (logmel_MT.exp() - LOG_EPS).clamp_min(0.0)
        inv = TT.InverseMelScale(n_stft=p["n_fft"] // 2 + 1, n_mels=p["n_mels"], sample_rate=p["sample_rate"])
        natural = (logmel_MT.shape[-1] - 1) * p["hop"]
        length = int(side.get("samples", natural))
        # Griffin-Lim re-analyses its estimate with reflect padding: keep it >= n_fft long
        gl = TT.GriffinLim(n_fft=p["n_fft"], hop_length=p["hop"], power=2.0, n_iter=32,
                           length=max(length, natural, p["n_fft"]))
        with torch.random.fork_rng(devices=[]):  # GriffinLim's random phase: same codes, same wave
            torch.manual_seed(0)
            wave = gl(inv(power_MT).clamp_min(0.0))
        return wave[:length].numpy().astype(np.float32)

    # --- training -------------------------------------------------------------------
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
    ) -> "MelFSQTokenizer":
        """Train on mono float32 waves at sample_rate (MSE on normalised log-mel segments).

        The first ~10% of the clips (at most 64) are held out: cut into fixed
        segments, they are the validation set (early stop, best weights).
        """
        p = resolve_params(cls.family, cls.defaults, params)
        if not samples:
            raise RecipeError("mel_fsq: no audio clips to fit on; add audio inputs to the corpus")
        n_val = n_validation(len(samples))
        with seeded(seed):
            tok = cls(p)
            model = tok.model
            mels = [tok.log_mel(w) for w in samples]  # each [M, n_i]
            cat_MT = torch.cat(mels[n_val:], dim=1)
            model.mel_mean.copy_(cat_MT.mean(dim=1))
            model.mel_std.copy_(cat_MT.std(dim=1).clamp_min(1e-3))
            S = p["segment_frames"]
            S += (-S) % p["time_downsample"]
            clips = [model.normalize(m[None])[0] for m in mels]
            clips = [F.pad(c[None], (0, max(0, S - c.shape[-1])), mode="replicate")[0] for c in clips]
            val_clips, train_clips = clips[:n_val], clips[n_val:]
            weights = torch.tensor([c.shape[-1] for c in train_clips], dtype=torch.float)

            def draw(g: torch.Generator) -> torch.Tensor:
                which = torch.multinomial(weights, p["batch_size"], replacement=True, generator=g)
                segs = []
                for i in which.tolist():
                    start = int(torch.randint(0, train_clips[i].shape[-1] - S + 1, (1,), generator=g))
                    segs.append(train_clips[i][:, start : start + S])
                return torch.stack(segs)  # x_BMS

            def loss_fn(m: nn.Module, x_BMS: torch.Tensor) -> torch.Tensor:
                return F.mse_loss(m(x_BMS), x_BMS)

            # validation: consecutive non-overlapping segments of the held-out clips, 64 at most
            val_segs = [c[:, i : i + S] for c in val_clips for i in range(0, c.shape[-1] - S + 1, S)][:64]
            val = [torch.stack(val_segs[i : i + 16]) for i in range(0, len(val_segs), 16)]
            run = train(model, draw, loss_fn, val, steps=p["steps"], lr=p["lr"],
                        generator=torch.Generator().manual_seed(seed), patience=p["patience"],
                        eval_every=p["eval_every"], log=log, tag="mel_fsq")
            model.load_state_dict(run.state)
            model.eval()
        log(f"[mel_fsq] done at step {run.facts['steps_run']}/{p['steps']}: best val mse "
            f"{run.facts['best_val_loss']:.4f} at step {run.facts['best_step']}, {run.facts['seconds']}s")
        seconds = sum(len(as_mono(w)) for w in samples) / p["sample_rate"]
        tok.fitted_on = {"n_samples": len(samples), "n_val": n_val, "seconds": round(seconds, 3),
                         "seed": seed, **run.card_facts(), **(fitted_on or {})}
        return tok
