"""GPU path = CPU path: codes of image, video frames and mel_fsq agree on CUDA and on the CPU.

Run with ``pytest -m gpu`` on a machine with CUDA (skipped elsewhere). Encoding
runs in full fp32 on CUDA (TF32 off: ``dataengine.tokenize.precision``), so
codes may differ only where float summation order moves a value across an FSQ
rounding boundary: at least 99% of codes must be identical (the tolerance).
Decoding runs under bf16 autocast: decoded pixels within 12/255 on average,
decoded log-mel within 0.25 (natural log) mean absolute difference.
"""
from __future__ import annotations

import copy

import numpy as np
import pytest
import torch


pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA"),
]
SAME = 0.99  # share of identical codes, GPU vs CPU


def on_cuda(tok):
    """A copy of the tokenizer moved to the GPU (the session fixture stays on the CPU)."""
    return copy.deepcopy(tok).to("cuda")


def agreement(a: list[np.ndarray], b: list[np.ndarray]) -> float:
    assert [len(x) for x in a] == [len(x) for x in b]
    flat_a, flat_b = np.concatenate(a), np.concatenate(b)
    return float((flat_a == flat_b).mean())


def test_image_codes_match_cpu(image_tok, make_image):
    rng = np.random.default_rng(0)
    imgs = [make_image(rng) for _ in range(40)]
    gpu = on_cuda(image_tok)
    cpu_items, gpu_items = image_tok.encode_batch(imgs), gpu.encode_batch(imgs)
    assert agreement([c for c, _ in cpu_items], [c for c, _ in gpu_items]) >= SAME
    assert gpu.model.encoder.net[0].weight.is_cuda
    cpu_px = np.stack(image_tok.decode_batch(cpu_items)).astype(float)
    gpu_px = np.stack(gpu.decode_batch(cpu_items)).astype(float)  # same codes, bf16 decoder
    assert np.abs(cpu_px - gpu_px).mean() < 12


def test_frames_codes_match_cpu(frames_tok, make_image):
    rng = np.random.default_rng(1)
    videos = [np.stack([make_image(rng) for _ in range(t)]) for t in (3, 5, 2)]
    gpu = on_cuda(frames_tok)
    cpu_items, gpu_items = frames_tok.encode_batch(videos), gpu.encode_batch(videos)
    assert agreement([c for c, _ in cpu_items], [c for c, _ in gpu_items]) >= SAME
    assert [s for _, s in cpu_items] == [s for _, s in gpu_items]
    for frames, (_, side) in zip(gpu.decode_batch(cpu_items), cpu_items):
        assert frames.shape[0] == side["frames"]


def test_mel_fsq_codes_match_cpu(mel_tok, make_clip):
    rng = np.random.default_rng(2)
    waves = [make_clip(rng, s, 16000) for s in (0.2, 0.5, 0.9, 1.0, 1.7, 2.5, 3.0, 4.2)]
    gpu = on_cuda(mel_tok)
    cpu_items, gpu_items = mel_tok.encode_batch(waves), gpu.encode_batch(waves)
    assert agreement([c for c, _ in cpu_items], [c for c, _ in gpu_items]) >= SAME
    assert [s for _, s in cpu_items] == [s for _, s in gpu_items]
    # batched on the GPU = one at a time on the GPU
    assert agreement([c for c, _ in gpu_items], [gpu.encode(w)[0] for w in waves]) >= SAME
    codes, side = cpu_items[4]
    mel_cpu, mel_gpu = mel_tok.decode_mel(codes, side), gpu.decode_mel(codes, side)
    assert mel_cpu.shape == mel_gpu.shape and np.abs(mel_cpu - mel_gpu).mean() < 0.25
