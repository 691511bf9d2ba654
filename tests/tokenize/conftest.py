"""Tiny, fast fixtures: synthetic data and tokenizers fitted for a few steps."""
from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import pytest
import torch

from dataengine.tokenize.audio_encodec import EncodecTokenizer
from dataengine.tokenize.audio_mel_fsq import MelFSQTokenizer
from dataengine.tokenize.image_fsq import FSQImageTokenizer
from dataengine.tokenize.sensor_bins import SensorBinsTokenizer
from dataengine.tokenize.text_bpe import BPETokenizer
from dataengine.tokenize.video_causal import CausalVideoTokenizer
from dataengine.tokenize.video_frames import FramesTokenizer

QUIET = lambda *_: None  # noqa: E731

TINY_IMAGE = {"steps": 100, "batch_size": 8, "channels": 32}
TINY_MEL = {"steps": 60, "batch_size": 8, "channels": 32, "segment_frames": 32}
TINY_CAUSAL = {"steps": 150, "batch_size": 8, "channels": 32, "lr": 5e-3}  # channels as TINY_IMAGE: reuses image_tok

TEXTS = [
    "The quick brown fox jumps over the lazy dog. " * 3,
    "Pack my box with five dozen liquor jugs; the five boxing wizards jump quickly.",
    "Données multimodales: vidéo, audio, images, capteurs et texte. Ça marche très bien.",
    "統一された語彙で全てのモダリティをトークン化する。 Emoji too: 🎉🚀✨",
    "def encode(self, x):\n    return self.tokenizer.encode(x)\n\n" * 2,
] * 4


def smooth_image(rng: np.random.Generator, size: int = 64) -> np.ndarray:
    """A random smooth colour image: low-frequency sinusoids plus a soft blob, uint8 [S,S,3]."""
    yy, xx = np.mgrid[0:size, 0:size] / size
    img = np.zeros((size, size, 3))
    for c in range(3):
        for _ in range(2):
            fy, fx, ph = rng.uniform(0.3, 2.0), rng.uniform(0.3, 2.0), rng.uniform(0, 2 * np.pi)
            img[..., c] += rng.uniform(0.2, 0.5) * np.sin(2 * np.pi * (fy * yy + fx * xx) + ph)
    cy, cx, r = rng.uniform(0.2, 0.8), rng.uniform(0.2, 0.8), rng.uniform(0.1, 0.25)
    blob = np.exp(-((yy - cy) ** 2 + (xx - cx) ** 2) / (2 * r * r))
    img += blob[..., None] * rng.uniform(-0.8, 0.8, size=3)
    return np.clip((img + 1) * 127.5, 0, 255).astype(np.uint8)


def pan_video(rng: np.random.Generator, frames: int, size: int = 64, speed: int = 2) -> np.ndarray:
    """A smooth image panned diagonally by `speed` pixels per frame: uint8 [T,S,S,3]."""
    big = smooth_image(rng, size + speed * frames)
    return np.stack([big[t * speed : t * speed + size, t * speed : t * speed + size] for t in range(frames)])


def tone_clip(rng: np.random.Generator, seconds: float, sr: int) -> np.ndarray:
    """A harmonic chirp with an amplitude envelope, float32 mono."""
    t = np.arange(int(seconds * sr)) / sr
    f = np.linspace(rng.uniform(150, 400), rng.uniform(150, 800), len(t))
    ph = 2 * np.pi * np.cumsum(f) / sr
    wave = sum((0.4 / k) * np.sin(k * ph) for k in range(1, 4))
    env = 0.6 + 0.4 * np.sin(2 * np.pi * rng.uniform(0.5, 2.0) * t)
    return (wave * env).astype(np.float32)


@pytest.fixture(scope="session")
def images() -> list[np.ndarray]:
    rng = np.random.default_rng(0)
    return [smooth_image(rng) for _ in range(8)]


@pytest.fixture(scope="session")
def clips() -> list[np.ndarray]:
    rng = np.random.default_rng(1)
    return [tone_clip(rng, 1.0, 16000) for _ in range(4)]


@pytest.fixture(scope="session")
def texts() -> list[str]:
    return list(TEXTS)


@pytest.fixture(scope="session")
def bpe() -> BPETokenizer:
    return BPETokenizer.fit(TEXTS, {"vocab_size": 400}, seed=0, log=QUIET)


@pytest.fixture(scope="session")
def image_tok(images) -> FSQImageTokenizer:
    return FSQImageTokenizer.fit(images, TINY_IMAGE, seed=0, log=QUIET)


@pytest.fixture(scope="session")
def frames_tok(image_tok) -> FramesTokenizer:
    video = np.stack([smooth_image(np.random.default_rng(5)) for _ in range(3)])
    return FramesTokenizer.fit([video], {}, seed=0, log=QUIET, image_tokenizer=image_tok)


@pytest.fixture(scope="session")
def videos() -> list[np.ndarray]:
    rng = np.random.default_rng(6)
    return [pan_video(rng, T, speed=1 + i % 3) for i, T in enumerate([13, 9, 11, 10])]


@pytest.fixture(scope="session")
def causal_tok(videos, images, image_tok) -> CausalVideoTokenizer:
    return CausalVideoTokenizer.fit(videos, TINY_CAUSAL, seed=0, log=QUIET, images=images,
                                    image_tokenizer=image_tok)


@pytest.fixture(scope="session")
def mel_tok(clips) -> MelFSQTokenizer:
    return MelFSQTokenizer.fit(clips, TINY_MEL, seed=0, log=QUIET)


@pytest.fixture(scope="session")
def sensor_tok() -> SensorBinsTokenizer:
    rng = np.random.default_rng(2)
    return SensorBinsTokenizer.fit([rng.normal(size=(50, 3))], {}, seed=0, log=QUIET)


def make_encodec_checkpoint(path: Path) -> Path:
    """An EnCodec 24 kHz state dict with random (non-zero) codebooks, saved with torch.save."""
    from encodec import EncodecModel

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)
        model = EncodecModel.encodec_model_24khz(pretrained=False)
    g = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for name, buf in model.named_buffers():
            if name.endswith("_codebook.embed"):  # k-means would fill these on first data
                buf.copy_(torch.randn(buf.shape, generator=g))
            elif name.endswith("_codebook.embed_avg"):
                buf.copy_(model.get_buffer(name.replace("embed_avg", "embed")))
            elif name.endswith("_codebook.inited"):
                buf.fill_(1.0)
    torch.save(model.state_dict(), path)
    return path


@pytest.fixture(scope="session")
def encodec_ckpt(tmp_path_factory) -> Path:
    return make_encodec_checkpoint(tmp_path_factory.mktemp("encodec") / "encodec_24khz.pt")


@pytest.fixture(scope="session")
def encodec_tok(encodec_ckpt) -> EncodecTokenizer:
    return EncodecTokenizer.fit([], {"checkpoint": str(encodec_ckpt), "bandwidth": 3.0}, seed=0, log=QUIET)


@pytest.fixture(scope="session")
def make_image():
    """smooth_image(rng, size=64), for tests that need more images."""
    return smooth_image


@pytest.fixture(scope="session")
def make_video():
    """pan_video(rng, frames, size=64, speed=2), for tests that need more video."""
    return pan_video


@pytest.fixture(scope="session")
def make_clip():
    """tone_clip(rng, seconds, sr), for tests that need more audio."""
    return tone_clip


@pytest.fixture
def family_case(request):
    """(tokenizer, example input, load resources) for the family named by request.param."""
    name = request.param
    rng = np.random.default_rng(3)
    if name == "bpe":
        return request.getfixturevalue("bpe"), "Hello wörld 🎉 — tokens!", {}
    if name == "fsq_image":
        return request.getfixturevalue("image_tok"), smooth_image(rng), {}
    if name == "frames":
        img = request.getfixturevalue("image_tok")
        video = np.stack([smooth_image(rng) for _ in range(2)])
        return request.getfixturevalue("frames_tok"), video, {"image_tokenizer": img}
    if name == "causal_video":
        return request.getfixturevalue("causal_tok"), pan_video(rng, 6), {}
    if name == "mel_fsq":
        return request.getfixturevalue("mel_tok"), tone_clip(rng, 0.7, 16000), {}
    if name == "encodec":
        return request.getfixturevalue("encodec_tok"), tone_clip(rng, 0.3, 24000), {}
    if name == "sensor_bins":
        return request.getfixturevalue("sensor_tok"), rng.normal(size=(20, 4)).astype(np.float32), {}
    raise AssertionError(name)


@pytest.fixture(autouse=True)
def one_torch_thread():
    """Inference on one thread: on a busy 2-core machine two threads mostly spin-wait."""
    prev = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(prev)
