"""`encodec`: audio as EnCodec 24 kHz residual-VQ codes, from a LOCAL checkpoint.

    wave float32 [N] @ 24 kHz -> EnCodec -> codes [n_q, T] (75 frames/s, 1024 codes each)
        -> time-major interleave: frame t gives n_q tokens, local id = q * 1024 + code

Bandwidth picks the depth: 1.5/3/6/12/24 kbps -> 2/4/8/16/32 codebooks. Nothing
is trained ("fit" validates the checkpoint and records its sha256) and nothing is
downloaded: a randomly initialised EnCodec emits only zeros, so a checkpoint is
required.
"""
from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any, Callable, ClassVar

import numpy as np
import torch

from dataengine.errors import RecipeError
from dataengine.tokenize.audio_mel_fsq import as_mono
from dataengine.tokenize.base import Tokenizer, group_by_shape, resolve_params, sha256_file

CODEBOOK = 1024
FRAME_RATE = 75  # 24000 / 320
BANDWIDTHS = {1.5: 2, 3.0: 4, 6.0: 8, 12.0: 16, 24.0: 32}

_HOW_TO = (
    "a randomly initialised EnCodec emits only zeros and there is no model download here; "
    "set `checkpoint:` in the encodec tokenizer params to a local state-dict file, e.g. one made "
    "on a machine with internet access by "
    "`torch.save(EncodecModel.encodec_model_24khz().state_dict(), 'encodec_24khz.pt')` "
    "(a .safetensors state dict works too)"
)


def _resolve_checkpoint(checkpoint: Any, base: Path | None = None) -> Path:
    if not checkpoint:
        raise RecipeError(f"encodec: no `checkpoint` given: {_HOW_TO}")
    path = Path(str(checkpoint)).expanduser()
    if not path.is_absolute() and not path.is_file() and base is not None and (base / path).is_file():
        path = base / path  # relative to the tokenizer directory
    if not path.is_file():
        raise RecipeError(f"encodec: checkpoint file {str(checkpoint)!r} not found: {_HOW_TO}")
    return path


def _load_model(path: Path, bandwidth: float) -> Any:
    from encodec import EncodecModel  # imported lazily: it pulls in torchaudio

    with warnings.catch_warnings():  # encodec uses the deprecated torch weight_norm
        warnings.simplefilter("ignore", FutureWarning)
        model = EncodecModel.encodec_model_24khz(pretrained=False)
    try:
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file

            state = load_file(str(path))
        else:
            state = torch.load(path, map_location="cpu", weights_only=True)
        model.load_state_dict(state)
    except Exception as e:  # wrong file, wrong model, pickled objects...
        raise RecipeError(
            f"encodec: {path} is not an EnCodec 24 kHz state dict loadable with "
            f"weights_only=True ({type(e).__name__}: {str(e)[:200]}); {_HOW_TO}"
        ) from e
    model.set_target_bandwidth(float(bandwidth))
    return model.eval()


class EncodecTokenizer(Tokenizer):
    """Pretrained EnCodec 24 kHz; ``level_sizes() == [1024] * n_q``."""

    family: ClassVar[str] = "encodec"
    modality: ClassVar[str] = "audio"
    weights_name: ClassVar[str | None] = None  # the checkpoint stays where it is
    defaults: ClassVar[dict[str, Any]] = {"checkpoint": None, "bandwidth": 6.0, "sample_rate": 24000}

    def __init__(self, params: dict | None = None, *, fitted_on: dict | None = None,
                 base_dir: Path | None = None):
        super().__init__(params, fitted_on=fitted_on)
        p = self.params
        bw = float(p["bandwidth"])
        if bw not in BANDWIDTHS:
            raise RecipeError(f"encodec: bandwidth {p['bandwidth']} not one of {sorted(BANDWIDTHS)} (kbps)")
        if int(p["sample_rate"]) != 24000:
            raise RecipeError("encodec: only the 24 kHz model is supported: set sample_rate: 24000 "
                              "(the decode stage resamples)")
        self.n_q = BANDWIDTHS[bw]
        self.checkpoint_path = _resolve_checkpoint(p["checkpoint"], base_dir)
        self._sha = sha256_file(self.checkpoint_path)
        self.model = _load_model(self.checkpoint_path, bw)

    def level_sizes(self) -> list[int]:
        return [CODEBOOK] * self.n_q

    def tokens_per_unit(self) -> dict[str, float]:
        return {"tokens_per_second": FRAME_RATE * self.n_q, "frames_per_second": FRAME_RATE}

    def weights_sha256(self) -> str:
        return self._sha  # the checkpoint's sha256

    @torch.inference_mode()
    def encode_batch(self, xs: list) -> list[tuple[np.ndarray, dict]]:
        """Same-length waves are stacked into one forward pass."""
        waves = [as_mono(x) for x in xs]
        out: list[tuple[np.ndarray, dict] | None] = [None] * len(waves)
        offsets_Q1 = (torch.arange(self.n_q) * CODEBOOK)[:, None]
        for _, idxs in group_by_shape(waves).items():
            x_B1N = torch.from_numpy(np.stack([waves[i] for i in idxs]))[:, None, :]
            frames = self.model.encode(x_B1N.to(self.device))  # 24 kHz model: no segments, one frame
            codes_BQT = torch.cat([codes for codes, _ in frames], dim=-1).cpu()
            for b, i in enumerate(idxs):
                local_QT = codes_BQT[b].long() + offsets_Q1
                ids = local_QT.T.reshape(-1).to(torch.int32).numpy()  # time-major
                out[i] = (ids, {"n_q": self.n_q, "frames": int(codes_BQT.shape[-1]),
                                "samples": int(len(waves[i]))})
        return out  # type: ignore[return-value]

    def encode(self, x: np.ndarray) -> tuple[np.ndarray, dict]:
        return self.encode_batch([x])[0]

    @torch.inference_mode()
    def decode(self, codes: np.ndarray, side: dict) -> np.ndarray:
        """-> float32 waveform at 24 kHz, trimmed to ``side["samples"]`` when given."""
        n_q = int(side.get("n_q", self.n_q))
        ids_TQ = torch.from_numpy(self.check_codes(codes)).reshape(-1, n_q)
        codes_1QT = (ids_TQ - (torch.arange(n_q) * CODEBOOK)[None, :]).T[None]
        wave = self.model.decode([(codes_1QT.to(self.device), None)])[0, 0].cpu()
        if "samples" in side:
            wave = wave[: int(side["samples"])]
        return wave.numpy().astype(np.float32)

    @classmethod
    def _from_saved(cls, card: dict, directory: Path, **resources: Any) -> "EncodecTokenizer":
        tok = cls(card["params"], fitted_on=card.get("fitted_on"), base_dir=directory)
        want = card.get("weights_sha256")
        if want and tok.weights_sha256() != want:
            raise RecipeError(
                f"encodec: checkpoint {tok.checkpoint_path} has sha256 {tok.weights_sha256()[:12]}..., "
                f"but the card at {directory} was made with {want[:12]}...: restore that checkpoint "
                f"or re-fit the tokenizer"
            )
        return tok

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
    ) -> "EncodecTokenizer":
        """No training: loads and validates the checkpoint, records its sha256."""
        p = resolve_params(cls.family, cls.defaults, params)
        tok = cls(p)
        seconds = sum(len(as_mono(w)) for w in samples) / 24000 if samples else 0.0
        log(f"[encodec] checkpoint {tok.checkpoint_path} sha256 {tok.weights_sha256()[:12]}..., "
            f"{tok.n_q} codebooks at {p['bandwidth']} kbps")
        tok.fitted_on = {"n_samples": len(samples), "seconds": round(seconds, 3), "seed": seed,
                         **(fitted_on or {})}
        return tok
