"""`sensor_bins`: Chronos-style mean-scaling + uniform binning of time series.

    values float32 [T,C] -> per-channel scale s_c = mean(|x_c|) (1.0 for an all-zero
    channel) -> x / s clipped to [-clip, clip] -> n_bins uniform bins -> [T*C] codes,
    time-major (t0c0, t0c1, ..., t1c0, ...)

Decoding returns bin centres times the scale: for |x/s| <= clip the error is at
most half a bin width times s. Stateless: nothing to train, no weights file.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Callable, ClassVar

import numpy as np

from dataengine.errors import RecipeError, RejectError
from dataengine.tokenize.base import Tokenizer, resolve_params

MIN_SCALE = 1e-12  # below this a channel counts as all-zero and gets scale 1.0


class SensorBinsTokenizer(Tokenizer):
    """Per-channel mean-abs scaling, then ``n_bins`` uniform bins over ``[-clip, clip]``."""

    family: ClassVar[str] = "sensor_bins"
    modality: ClassVar[str] = "sensor"
    weights_name: ClassVar[str | None] = None
    defaults: ClassVar[dict[str, Any]] = {"n_bins": 256, "clip": 6.0}

    def __init__(self, params: dict | None = None, *, fitted_on: dict | None = None):
        super().__init__(params, fitted_on=fitted_on)
        n, clip = int(self.params["n_bins"]), float(self.params["clip"])
        if n < 2 or clip <= 0:
            raise RecipeError(f"sensor_bins: need n_bins >= 2 and clip > 0, got {n} and {clip}")
        self.n_bins, self.clip = n, clip
        self.width = 2.0 * clip / n
        self.centres = -clip + self.width * (np.arange(n) + 0.5)  # [n_bins] float64

    def level_sizes(self) -> list[int]:
        return [self.n_bins]

    def tokens_per_unit(self) -> dict[str, float]:
        return {"tokens_per_value": 1, "tokens_per_timestep_per_channel": 1}

    @staticmethod
    def _as_TC(values: Any) -> np.ndarray:
        a = np.asarray(values, dtype=np.float64)
        if a.ndim == 1:
            a = a[:, None]
        if a.ndim != 2 or a.shape[0] < 1 or a.shape[1] < 1:
            raise RejectError("bad_sensor_shape", f"expected float [T,C], got shape {np.shape(values)}")
        if not np.isfinite(a).all():
            raise RejectError("non_finite_sensor", "sensor values contain NaN or inf")
        return a

    def encode(self, x: np.ndarray) -> tuple[np.ndarray, dict]:
        v_TC = self._as_TC(x)
        scale_C = np.abs(v_TC).mean(axis=0)
        scale_C = np.where(scale_C > MIN_SCALE, scale_C, 1.0)
        u_TC = np.clip(v_TC / scale_C, -self.clip, self.clip)
        codes_TC = np.floor((u_TC + self.clip) / self.width).astype(np.int64)
        codes_TC = np.clip(codes_TC, 0, self.n_bins - 1)  # u == clip falls in the last bin
        side = {"scale": [float(s) for s in scale_C], "channels": int(v_TC.shape[1])}
        return codes_TC.reshape(-1).astype(np.int32), side

    def decode(self, codes: np.ndarray, side: dict) -> np.ndarray:
        """-> float32 [T, C]: bin centre times the channel's scale."""
        C = int(side["channels"])
        codes_TC = self.check_codes(codes).reshape(-1, C)
        scale_C = np.asarray(side["scale"], dtype=np.float64)
        return (self.centres[codes_TC] * scale_C).astype(np.float32)

    @classmethod
    def _from_saved(cls, card: dict, directory: Path, **resources: Any) -> "SensorBinsTokenizer":
        return cls(card["params"], fitted_on=card.get("fitted_on"))

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
    ) -> "SensorBinsTokenizer":
        """Stateless: records params and how much of the corpus falls outside the clip range."""
        tok = cls(resolve_params(cls.family, cls.defaults, params))
        n_values = n_clipped = n_bad = 0
        for s in samples:
            try:
                v_TC = tok._as_TC(s)
            except RejectError:
                n_bad += 1  # encode will reject it too; fitting carries on
                continue
            scale_C = np.abs(v_TC).mean(axis=0)
            u_TC = v_TC / np.where(scale_C > MIN_SCALE, scale_C, 1.0)
            n_values += u_TC.size
            n_clipped += int((np.abs(u_TC) > tok.clip).sum())
        frac = round(n_clipped / max(1, n_values), 6)
        log(f"[sensor_bins] {len(samples)} recordings, {n_values} values, {frac:.4%} beyond clip")
        tok.fitted_on = {"n_samples": len(samples), "n_rejected": n_bad, "n_values": n_values,
                         "clipped_fraction": frac, "seed": seed, **(fitted_on or {})}
        return tok
