"""Running 1-D conv nets on padded batches of different lengths, with the one-at-a-time result.

A clip alone sees zeros past its end (the convs' zero padding) and normalises
over its own frames. In a padded batch, ``masked_forward`` keeps both true:
it zeroes every position past an item's valid length before each convolution
(so a kernel reaching past the end sees zeros, as alone) and runs GroupNorm
per item over its valid frames only. Valid lengths follow each conv's
stride/padding arithmetic. Outputs past an item's length are garbage: trim them.

Supported: ``nn.Sequential``, ``Conv1d`` / ``ConvTranspose1d`` with zero
padding, ``GroupNorm``, pointwise activations, and residual blocks
``x + m.block(x)`` whose classes the caller names. Anything else raises
``Unsupported``: the caller falls back to same-length batches.
"""
from __future__ import annotations

import torch
import torch.nn as nn

POINTWISE = (nn.SiLU, nn.ReLU, nn.GELU, nn.LeakyReLU, nn.Tanh, nn.Identity, nn.Dropout)


class Unsupported(TypeError):
    """A module ``masked_forward`` cannot run exactly on a padded batch."""


def length_buckets(lengths: list[int], *, max_items: int = 32, max_cells: int = 1 << 16,
                   max_pad: float = 0.25) -> list[list[int]]:
    """Indices grouped by similar length: sorted, a new bucket when the longest would pass
    ``(1 + max_pad)`` x the shortest, ``max_items`` items, or ``max_cells`` = items x longest."""
    order = sorted(range(len(lengths)), key=lambda i: (lengths[i], i))
    buckets: list[list[int]] = []
    for i in order:
        b = buckets[-1] if buckets else None
        if (b and len(b) < max_items and lengths[i] <= (1 + max_pad) * max(1, lengths[b[0]])
                and (len(b) + 1) * lengths[i] <= max_cells):
            b.append(i)
        else:
            buckets.append([i])
    return buckets


def _mask(x_BCT: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
    keep_BT = torch.arange(x_BCT.shape[-1], device=x_BCT.device)[None, :] < lengths[:, None]
    return x_BCT * keep_BT[:, None, :].to(x_BCT.dtype)


def _conv_len(m: nn.Conv1d | nn.ConvTranspose1d, n: torch.Tensor) -> torch.Tensor:
    if m.padding_mode != "zeros" or isinstance(m.padding, str):
        raise Unsupported(f"{type(m).__name__} with padding {m.padding!r}/{m.padding_mode}")
    k, s, p, d = m.kernel_size[0], m.stride[0], m.padding[0], m.dilation[0]
    if isinstance(m, nn.ConvTranspose1d):
        return (n - 1) * s - 2 * p + d * (k - 1) + m.output_padding[0] + 1
    return torch.div(n + 2 * p - d * (k - 1) - 1, s, rounding_mode="floor") + 1


def _group_norm(m: nn.GroupNorm, x_BCT: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
    T = x_BCT.shape[-1]
    if bool((lengths == T).all()):
        return m(x_BCT)
    out = torch.zeros_like(x_BCT)
    for i, n in enumerate(lengths.tolist()):
        out[i : i + 1, :, :n] = m(x_BCT[i : i + 1, :, :n])
    return out


def masked_forward(module: nn.Module, x_BCT: torch.Tensor, lengths: torch.Tensor,
                   residual: tuple[type, ...] = ()) -> tuple[torch.Tensor, torch.Tensor]:
    """-> (output, valid lengths); ``lengths`` int64 [B] on the tensor's device."""
    if isinstance(module, nn.Sequential):
        for m in module:
            x_BCT, lengths = masked_forward(m, x_BCT, lengths, residual)
        return x_BCT, lengths
    if isinstance(module, (nn.Conv1d, nn.ConvTranspose1d)):
        out_len = _conv_len(module, lengths)
        return module(_mask(x_BCT, lengths)), out_len
    if isinstance(module, nn.GroupNorm):
        return _group_norm(module, x_BCT, lengths), lengths
    if isinstance(module, POINTWISE):
        return module(x_BCT), lengths
    if residual and isinstance(module, residual):
        y_BCT, out_len = masked_forward(module.block, x_BCT, lengths, residual)
        return x_BCT + y_BCT, out_len
    raise Unsupported(f"masked_forward cannot run {type(module).__name__} on a padded batch")
