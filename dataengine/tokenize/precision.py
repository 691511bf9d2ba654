"""Numeric precision of tokenizer forward passes on an accelerator.

FSQ codes come from ROUNDING the encoder's output, so a small numeric change
(bf16, TF32) moves a value across a rounding boundary now and then and flips a
code. Hence:

- ``encode_precision(device)``: full fp32 on CUDA, TF32 off for convolutions
  and matmuls, so GPU codes match the CPU's up to float summation order
  (``tests/tokenize/test_tokenize_gpu.py`` asks for >= 99% identical codes);
- ``decode_precision(device)``: bf16 autocast on CUDA. A decoder's output is
  continuous (pixels, log-mel): bf16 changes it by far less than the
  quantisation already did (``tests/tokenize/test_tokenize_gpu.py`` bounds it).

Both are no-ops on the CPU, and both restore the global settings on exit.
"""
from __future__ import annotations

from contextlib import contextmanager, nullcontext
from typing import Iterator

import torch


def _is_cuda(device: str | torch.device) -> bool:
    return torch.device(device).type == "cuda"


@contextmanager
def encode_precision(device: str | torch.device) -> Iterator[None]:
    """fp32 without TF32 on CUDA (codes as on the CPU); nothing on the CPU."""
    if not _is_cuda(device):
        yield
        return
    conv, mm = torch.backends.cudnn.conv.fp32_precision, torch.backends.cuda.matmul.fp32_precision
    torch.backends.cudnn.conv.fp32_precision = "ieee"
    torch.backends.cuda.matmul.fp32_precision = "ieee"
    try:
        yield
    finally:
        torch.backends.cudnn.conv.fp32_precision = conv
        torch.backends.cuda.matmul.fp32_precision = mm


def decode_precision(device: str | torch.device):
    """bf16 autocast on CUDA; nothing on the CPU. Cast outputs back with ``.float()``."""
    if _is_cuda(device):
        return torch.autocast("cuda", dtype=torch.bfloat16)
    return nullcontext()
