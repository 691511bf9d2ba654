"""Small video helpers shared by the causal video tokenizer and its fitting: frames checked as a clip,
and a 2-D module applied frame by frame."""
from __future__ import annotations

from typing import Any

import numpy as np
import torch
import torch.nn as nn

from dataengine.errors import RejectError


def per_frame(module: nn.Module, x_BTCHW: torch.Tensor) -> torch.Tensor:
    """Apply a 2-D module to every frame: [B,T,C,H,W] -> [B,T,C',H',W']."""
    B, T = x_BTCHW.shape[:2]
    return module(x_BTCHW.flatten(0, 1)).unflatten(0, (B, T))


def as_video(frames: Any) -> np.ndarray:
    """uint8 [T,H,W,3] (an alpha channel is dropped); anything else is rejected."""
    a = np.asarray(frames)
    if a.ndim != 4 or a.shape[-1] not in (3, 4) or a.shape[0] < 1 or min(a.shape[1:3]) < 1:
        raise RejectError("bad_video_shape", f"expected uint8 [T,H,W,3] with T>=1, got {a.shape}")
    if a.dtype != np.uint8:
        raise RejectError("bad_video_dtype", f"expected uint8 frames, got {a.dtype}")
    return a[..., :3]
