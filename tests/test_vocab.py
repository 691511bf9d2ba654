import json

import numpy as np
import pytest

from dataengine.errors import RecipeError
from dataengine.vocab import NUM_SPECIALS, Vocab, specials_for


class FakeTok:
    def __init__(self, family, modality, levels):
        self.family, self.modality, self._levels = family, modality, levels

    def level_sizes(self):
        return self._levels

    @property
    def vocab_size(self):
        return sum(self._levels)

    def card(self):
        return {"weights_sha256": f"sha-{self.family}"}


@pytest.fixture
def vocab():
    return Vocab.build({
        "sensor": FakeTok("sensor_bins", "sensor", [256]),
        "audio": FakeTok("encodec", "audio", [1024, 1024, 1024]),
        "text": FakeTok("bpe", "text", [500]),
        "image": FakeTok("fsq_image", "image", [1000]),
        "video": FakeTok("frames", "video", [1000]),
    })


def test_ranges_are_contiguous_disjoint_and_in_modality_order(vocab):
    assert len(specials_for(vocab.tokenizers)) <= NUM_SPECIALS
    assert [r.modality for r in vocab.ranges] == ["text", "image", "video", "audio", "audio", "audio", "sensor"]
    ends = NUM_SPECIALS
    for r in vocab.ranges:
        assert r.start == ends
        ends = r.end
    assert vocab.size == NUM_SPECIALS + 500 + 1000 + 1000 + 3 * 1024 + 256
    assert [r.level for r in vocab.ranges if r.name == "audio"] == [0, 1, 2]


def test_modality_lookup_matches_ranges(vocab):
    ids = np.array([0, 63, 64, 563, 564, 1564, 2564, 2564 + 3071, vocab.size - 1])
    assert list(vocab.modality_of(ids)) == [
        "special", "special", "text", "text", "image", "video", "audio", "audio", "sensor"]
    with pytest.raises(ValueError):
        vocab.modality_of(np.array([vocab.size]))


def test_local_global_round_trip_and_bounds(vocab):
    local = np.array([0, 1023, 1024, 3071])  # level 0 and level 2 codes of the audio tokenizer
    g = vocab.to_global("audio", local)
    assert set(vocab.modality_of(g)) == {"audio"}
    np.testing.assert_array_equal(vocab.to_local("audio", g), local)
    with pytest.raises(ValueError):
        vocab.to_global("audio", np.array([3072]))
    with pytest.raises(ValueError):
        vocab.to_local("text", g)


def test_save_load_and_hash_detects_edits(vocab, tmp_path):
    path = tmp_path / "vocab.json"
    vocab.save(path)
    again = Vocab.load(path)
    assert again.sha256 == vocab.sha256 and again.size == vocab.size
    data = json.loads(path.read_text())
    data["ranges"][-1]["size"] += 1  # still contiguous, so only the hash can notice
    path.write_text(json.dumps(data))
    with pytest.raises(RecipeError, match="sha256"):
        Vocab.load(path)


def test_specials_have_fixed_ids(vocab):
    assert vocab.special("<|pad|>") == 0 and vocab.special("<|bos|>") == 1 and vocab.special("<|eos|>") == 2
