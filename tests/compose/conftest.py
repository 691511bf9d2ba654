"""A real (tiny) BPE and a vocabulary around it, so target spans can be checked as text."""
import pytest

from dataengine.tokenize.text_bpe import BPETokenizer
from dataengine.vocab import Vocab

from test_vocab import FakeTok

CORPUS = [
    "Describe this image. What is shown in this picture? Transcribe this audio.",
    "A red ball lies on the green grass next to a small dog.",
    "Which activity is this recording? walking, running, standing.",
    "What happens in this video? A person waves at the camera. Café, naïve, 🎉.",
] * 4


@pytest.fixture(scope="session")
def bpe() -> BPETokenizer:
    return BPETokenizer.fit(CORPUS, {"vocab_size": 300}, seed=0, log=lambda *_: None)


@pytest.fixture(scope="session")
def text_vocab(bpe) -> Vocab:
    return Vocab.build({"text": bpe, "image": FakeTok("fsq_image", "image", [50]),
                        "video": FakeTok("frames", "video", [50]), "audio": FakeTok("mel_fsq", "audio", [40]),
                        "sensor": FakeTok("sensor_bins", "sensor", [16])})
