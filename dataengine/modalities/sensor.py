"""Sensor recordings: [T, C] float channels resampled to the recipe's rate, labelled by their sidecar."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import polars as pl
import pyarrow as pa

from dataengine.curate.stats_sensor import sensor_item_stats
from dataengine.decode.sensor import SENSOR_EXTS, decode_sensor
from dataengine.evaluate.sensor import evaluate_sensor
from dataengine.modalities.spec import DecodeContext, Decoded, Modality

F = pa.float64()


@dataclass
class SensorDecode:
    rate_hz: float = 10.0
    max_rows: int = 4096
    max_nan_ratio: float = 0.1


def decode(data: bytes, path: str, sidecar: dict | None, meta: dict, ctx: DecodeContext) -> Decoded:
    c = ctx.config.sensor
    rec = decode_sensor(data, Path(path).suffix.lower(), sidecar, rate_hz=c.rate_hz, max_rows=c.max_rows,
                        max_nan_ratio=c.max_nan_ratio, max_label_chars=ctx.config.text.max_chars)
    meta.update({"channels": rec.channels, "rate_hz": rec.rate_hz, "sensor": rec.meta})
    if rec.label is not None and "text" not in meta:
        meta["text"] = str(rec.label)
    meta["label"] = rec.label
    values = np.ascontiguousarray(rec.values, dtype=np.float32)
    smeta = {k: rec.meta.get(k) for k in ("source_rows", "source_rate_hz", "duration_s", "filled_non_finite")}
    smeta["rate_hz"] = rec.rate_hz
    return Decoded({"sensor": values}, {"sensor": values}, smeta)


def variance_mse(original: np.ndarray, decoded: np.ndarray, tok=None) -> float:
    """MSE over each channel's variance (a flat channel: plain MSE), so one threshold fits every sensor."""
    a = np.asarray(original, np.float64).reshape(len(decoded), -1)
    b = np.asarray(decoded, np.float64)
    var = np.nanvar(a, axis=0)
    var = np.where(var > 1e-12, var, 1.0)
    return float(np.nanmean((a - b) ** 2 / var))


def write_decoded(stem: Path, value, side: dict, meta: dict, tok) -> Path:
    path = stem.with_suffix(".csv")
    channels = meta.get("channels") or [f"ch{i}" for i in range(value.shape[1])]
    pl.DataFrame({c: value[:, i] for i, c in enumerate(channels)}).write_csv(path)
    return path


SPEC = Modality(
    name="sensor", array="sensor", extensions=tuple(sorted(SENSOR_EXTS)),
    markers=("<|sensor_start|>", "<|sensor_end|>"), separator="<|row_sep|>", in_vocab_v1=True,
    rows=lambda side, local: len(local) // int(side["channels"]), paired_text="label",
    # a label does not determine a recording: no generation task
    tasks=("sensor_to_label", "instruct", "sensor"), default_tasks={"sensor_to_label": 0.7, "instruct": 0.3},
    templates=("Which activity is this recording?", "What is the person doing in this sensor recording?",
               "Label this sensor recording."),
    ngram=2, threshold=0.5,
    stat_fields={
        "sensor_length": F,          # rows in the source recording
        "sensor_rate_hz": F,         # source sampling rate, Hz
        "sensor_duration_s": F,      # source duration, s
        "sensor_channels": F,        # channels (columns besides time), count
        "sensor_nan_ratio": F,       # fraction of source values that were NaN/inf (before filling)
        "sensor_flat_ratio": F,      # fraction of channels with ~zero variance (std <= 1e-6 x max(1, mean |x|))
    },
    decode_config=SensorDecode, decode=decode, stats=lambda full, smeta: sensor_item_stats(full["sensor"], smeta),
    fit_items=lambda arr: {"sensor": [arr]}, recon_mse=variance_mse, recon_unit="MSE / channel variance",
    write_decoded=write_decoded, evaluate=evaluate_sensor,
    eval_keys=("rmse", "max_abs_error", "bound", "within_bound", "tokens_per_second"),
    eval_resources=lambda d: {"sensor_rate_hz": d.sensor.rate_hz}, color="#54a24b",
)
